"""Content digests of files and model folders, for cache keys that change when the bytes change."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per process by path, size and mtime)."""
    st = os.stat(path)
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def folder_digest(path: str | os.PathLike) -> str:
    """sha256 over a folder's relative file names and contents (hidden files skipped)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)):
        h.update(f"{f.relative_to(root).as_posix()}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """:func:`file_digest` or :func:`folder_digest`, whichever ``path`` is."""
    return folder_digest(path) if Path(path).is_dir() else file_digest(path)
