"""Image sets: a folder of images (id = file stem) plus an optional ``prompts.csv`` truth."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from .errors import BadImageError, ImageSetError, TruthError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
#: Largest image (in pixels) decoded; bigger files are refused as decompression bombs.
MAX_PIXELS = 64_000_000


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one image to RGB, applying EXIF orientation; raise :class:`BadImageError` on any fault."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "file is empty (0 bytes)")
    except OSError as e:
        raise BadImageError(path, f"cannot read: {e}") from e
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(path, f"decompression bomb refused ({e})") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise BadImageError(path, f"cannot decode: {type(e).__name__}: {e}") from e
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
    folder: str | Path,
    prompts_csv: str | Path | None = None,
    skip_bad: bool = False,
    recursive: bool = False,
) -> ImageSet:
    """List a folder's images sorted by id; read ``prompts.csv`` beside them if present.

    With ``skip_bad`` every image is decoded up front and bad ones are dropped and reported in
    ``ImageSet.skipped``; otherwise a bad image raises :class:`BadImageError` when it is read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageSetError(f"image folder not found: {root}")
    files = root.rglob("*") if recursive else root.iterdir()
    paths = sorted(
        (p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
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
