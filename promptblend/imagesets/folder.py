"""An image folder: id = file stem, sorted; truth from ``prompts.csv`` beside the images.

The competition's layout (a folder holding ``images/`` and ``prompts.csv``) is one set with its truth;
so is a plain folder of images, with ``prompts.csv`` in it or in its parent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BadImageError, ImageSetError, TruthError
from .base import ImageSet, Raw
from .decode import IMAGE_EXTENSIONS, read_file

PROMPTS_CSV = "prompts.csv"
#: The competition's layout: ``SET/images/*.png`` with ``SET/prompts.csv``.
IMAGES_SUBFOLDER = "images"


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _holds_images(folder: Path) -> bool:
    return folder.is_dir() and any(_is_image(p) for p in folder.iterdir())


def claims(source: Any) -> bool:
    """A folder holding images (or ``images/`` with them), or a list of image files."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(_is_image(Path(s)) for s in source)
    path = Path(source)
    return _holds_images(path) or _holds_images(path / IMAGES_SUBFOLDER)


class FolderSet(ImageSet):
    """Image files with their ids (stems) and the truth prompts when known."""

    def __init__(self, root: Path, paths: Sequence[Path], prompts: dict[str, str] | None = None) -> None:
        self.root, self.paths = root, list(paths)
        self.ids = [p.stem for p in self.paths]
        self.prompts, self.skipped = prompts, []

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        for row in rows:
            path = self.paths[row]
            try:
                yield Raw(self.ids[row], str(path), read_file(path), self._prompt(row))
            except BadImageError as e:
                yield Raw(self.ids[row], str(path), None, self._prompt(row), e.reason)

    def _prompt(self, row: int) -> str | None:
        return None if self.prompts is None else self.prompts.get(self.ids[row])

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        paths = self.paths if rows is None else [self.paths[r] for r in rows]
        if fast:
            return b"fast", [f"{st.st_size}:{st.st_mtime_ns}".encode() for st in (p.stat() for p in paths)]
        return b"content", [_file_digest(p) for p in paths]


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def read_prompts_csv(path: str | Path) -> dict[str, str]:
    """Read ``imgId,prompt`` (extra columns allowed) into an ordered dict; bad files raise :class:`TruthError`."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TruthError(f"prompts file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise TruthError(f"cannot read {path}: {e}") from e
    for col in ("imgId", "prompt"):
        if col not in df.columns:
            raise TruthError(f"{path} has no '{col}' column (columns: {list(df.columns)})")
    if df["imgId"].duplicated().any():
        dup = df.loc[df["imgId"].duplicated(), "imgId"].tolist()
        raise TruthError(f"{path} repeats image ids, e.g. {dup[:3]}")
    if (df["prompt"].str.strip() == "").any():
        bad = df.loc[df["prompt"].str.strip() == "", "imgId"].tolist()
        raise TruthError(f"{path} has empty prompts for ids {bad[:3]}")
    return dict(zip(df["imgId"], df["prompt"]))


def open_folder(source: Any, prompts_csv: str | Path | None = None, recursive: bool = False,
                skip_bad: bool = False) -> FolderSet:
    """List a folder's images sorted by id (or take a list of image files); ids must not repeat.

    A dangling symlink is kept as a bad image (named now unless ``skip_bad``, which drops it later).
    """
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not (p.is_file() or p.is_symlink())]
        if missing:
            raise ImageSetError(f"image files not found: {missing[:3]}")
        root = paths[0].parent
    else:
        root = Path(source)
        if not root.is_dir():
            raise ImageSetError(f"image folder not found: {root}")
        if not _holds_images(root) and _holds_images(root / IMAGES_SUBFOLDER):
            if prompts_csv is None and (root / PROMPTS_CSV).is_file():
                prompts_csv = root / PROMPTS_CSV
            root = root / IMAGES_SUBFOLDER
        files = root.rglob("*") if recursive else root.iterdir()
        # a dangling symlink is kept: it is a bad image (an error, or a skip with --skip-bad), never silently dropped
        paths = sorted((p for p in files if (p.is_file() or p.is_symlink()) and _is_image(p)),
                       key=lambda p: (p.stem, p.name))
        if not paths:
            raise ImageSetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root} "
                                f"(nor in {root / IMAGES_SUBFOLDER}, the competition's layout)")
        for folder in (root, root.parent):
            if prompts_csv is None and (folder / PROMPTS_CSV).is_file():
                prompts_csv = folder / PROMPTS_CSV
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ImageSetError(f"two files share the id '{p.stem}': {seen[p.stem]} and {p}")
        seen[p.stem] = p
    if not skip_bad:  # the fingerprint reads every file: name a dangling link before it does
        for p in paths:
            if p.is_symlink() and not p.exists():
                read_file(p)
    prompts = read_prompts_csv(prompts_csv) if prompts_csv is not None else None
    return FolderSet(root, paths, prompts)
