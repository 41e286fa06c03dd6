"""Where promptblend keeps caches that are not tied to a user's output folder, and the one check every
cached artefact passes on load (a failing one is removed with a warning and rebuilt)."""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

from .atomic import aside_path
from .errors import PromptblendError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a damaged cache entry raises on load: a typed check, numpy/JSON/text decoding (ValueError), a short
#: read (OSError, EOFError), a missing key, a broken zip (``.npz``); loaders wrap others (safetensors...) in these.
DAMAGED = (PromptblendError, ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


def cache_dir() -> Path:
    """The cache root: ``$PROMPTBLEND_CACHE``, else ``~/.cache/promptblend``."""
    return Path(os.environ.get("PROMPTBLEND_CACHE", Path.home() / ".cache" / "promptblend"))


def load_entry(path: str | Path, load: Callable[[Path], T], what: str) -> T | None:
    """``load(path)`` when the cache entry ``path`` (a file or folder) exists and passes its checks; None
    when it is absent, or when ``load`` raises one of :data:`DAMAGED`: then the entry is
    removed with a warning, so the caller rebuilds it.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load(path)
    except DAMAGED as e:
        if isinstance(e, PermissionError):
            raise  # unreadable is not damaged: removing it would fail too
        log.warning("cached %s %s fails its checks (%s): removed, rebuilding it", what, path, e)
        discard(path)
        return None


def discard(path: str | Path) -> None:
    """Remove a cache entry in one rename first, so readers see the old entry or none (gone already: fine)."""
    aside = aside_path(path)
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
