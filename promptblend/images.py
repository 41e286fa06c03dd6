"""Image sets: a folder of images (id = file stem) plus an optional ``prompts.csv`` truth."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from PIL import Image, ImageOps

from .errors import BadImageError, ImageSetError, TruthError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
#: Largest image (in pixels) decoded; bigger files are refused as decompression bombs.
MAX_PIXELS = 64_000_000


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one image file to RGB, applying EXIF orientation; raise :class:`BadImageError` on any fault."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError(path, f"dangling symlink (to {os.readlink(path)})")
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "file is empty (0 bytes)")
    except OSError as e:
        raise BadImageError(path, f"cannot read: {e}") from e
    return _decode(path, path, max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes (a shard member) to RGB like :func:`load_image`; ``name`` labels errors."""
    if not data:
        raise BadImageError(name, "image is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: Path | io.BytesIO, name: str | Path, max_pixels: int) -> Image.Image:
    """Open, load and convert ``source`` under a decompression-bomb limit."""
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(name, f"decompression bomb refused ({e})") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise BadImageError(name, f"cannot decode: {type(e).__name__}: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, LA, P, CMYK, I;16, L, 1...) to 8-bit RGB; alpha goes onto white."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def part_index(rank: int = 0, world_size: int = 1, split_workers: bool = True) -> tuple[int, int]:
    """This reader's part and the number of parts: ``rank * workers + worker`` of ``world_size * workers``.

    Workers are those of the current ``torch.utils.data`` DataLoader (none outside one); shard sets
    split by shard, folders by row.
    """
    worker, workers = 0, 1
    if split_workers:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            worker, workers = info.id, info.num_workers
    return rank * workers + worker, world_size * workers


@dataclass
class ImageSet:
    """A sorted list of image files with their ids, and the truth prompts when known."""

    root: Path
    ids: list[str]
    paths: list[Path]
    prompts: dict[str, str] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` to RGB."""
        return load_image(self.paths[i])

    def fingerprint(self, fast: bool = False) -> str:
        """Hash of ids and file contents (or sizes + mtimes when ``fast``): the cache key's image part."""
        h = hashlib.sha256(b"fast" if fast else b"content")
        for id_, p in zip(self.ids, self.paths):
            h.update(id_.encode() + b"\0")
            if fast:
                st = p.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(_file_digest(p))
        return h.hexdigest()[:16]

    def samples(self, start: int = 0, stop: int | None = None, *, rank: int = 0, world_size: int = 1,
                split_workers: bool = True, with_prompt: bool = False) -> Iterator[tuple]:
        """Stream ``(id, RGB image)`` (or ``(id, image, prompt)``) of rows ``start:stop`` in this part (see :func:`part_index`)."""
        part, parts = part_index(rank, world_size, split_workers)
        prompts = self.prompts or {}
        for i in range(start, len(self.ids) if stop is None else min(stop, len(self.ids))):
            if i % parts == part:
                image = self.load(i)
                yield (self.ids[i], image, prompts.get(self.ids[i])) if with_prompt else (self.ids[i], image)

    def prompt_list(self) -> list[str]:
        """Truth prompts in id order; raise :class:`TruthError` if any id lacks one."""
        if self.prompts is None:
            raise TruthError(f"{self.root} has no prompts.csv")
        missing = [i for i in self.ids if i not in self.prompts]
        if missing:
            raise TruthError(f"prompts.csv lacks {len(missing)} image ids, e.g. {missing[:3]}")
        return [self.prompts[i] for i in self.ids]


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


def open_image_set(
    source: Any,
    prompts_csv: str | Path | None = None,
    skip_bad: bool = False,
    recursive: bool = False,
) -> AnyImageSet:
    """Open an image set: an opened set as is, WebDataset shards (see :mod:`promptblend.shards`), or a folder.

    A folder's images are listed sorted by id, with ``prompts.csv`` beside them as truth when present.
    With ``skip_bad`` every folder image is decoded up front and bad ones are dropped and reported in
    ``ImageSet.skipped``; otherwise a bad image raises :class:`BadImageError` when it is read.
    """
    from .shards import ShardSet, is_shard_source, open_shard_set

    if isinstance(source, (ImageSet, ShardSet)):
        return source
    if is_shard_source(source) and not is_image_folder(source):
        return open_shard_set(source)
    return _open_folder(Path(source), prompts_csv, skip_bad, recursive)


def is_image_folder(source: Any) -> bool:
    """Whether ``source`` is a local folder holding image files."""
    if isinstance(source, (list, tuple)) or not Path(source).is_dir():
        return False
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in Path(source).iterdir())


def _open_folder(root: Path, prompts_csv: str | Path | None, skip_bad: bool, recursive: bool) -> ImageSet:
    """List a folder's images (see :func:`open_image_set`)."""
    if not root.is_dir():
        raise ImageSetError(f"image folder not found: {root}")
    files = root.rglob("*") if recursive else root.iterdir()
    paths = sorted(
        # a dangling symlink is kept: it is a bad image (an error, or a skip with --skip-bad), never silently dropped
        (p for p in files if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: (p.stem, p.name),
    )
    if not paths:
        raise ImageSetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ImageSetError(f"two files share the id '{p.stem}': {seen[p.stem]} and {p}")
        seen[p.stem] = p
    skipped: list[tuple[Path, str]] = []
    if not skip_bad:  # the fingerprint reads every file: name a dangling link before it does
        for p in paths:
            if p.is_symlink() and not p.exists():
                load_image(p)
    if skip_bad:
        good = []
        for p in paths:
            try:
                load_image(p)
                good.append(p)
            except BadImageError as e:
                skipped.append((p, e.reason))
                log.warning("skipping %s", e)
        paths = good
        if not paths:
            raise ImageSetError(f"every image in {root} is bad")
    if prompts_csv is None and (root / "prompts.csv").is_file():
        prompts_csv = root / "prompts.csv"
    if prompts_csv is None and (root.parent / "prompts.csv").is_file():
        prompts_csv = root.parent / "prompts.csv"
    prompts = read_prompts_csv(prompts_csv) if prompts_csv is not None else None
    return ImageSet(root, [p.stem for p in paths], paths, prompts, skipped)


if TYPE_CHECKING:
    from .shards import ShardSet

#: What :func:`open_image_set` returns: both kinds have ids, fingerprint, prompts, prompt_list, samples and load.
AnyImageSet = Union[ImageSet, "ShardSet"]
