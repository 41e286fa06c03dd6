"""The one image decode: any PIL mode to 8-bit RGB (alpha onto white), EXIF orientation, a size cap,
and the record of a sample that failed (carried out of DataLoader workers instead of an exception)."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import BadImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
#: Largest image (in pixels) decoded; bigger files are refused as decompression bombs.
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class BadSample:
    """A sample that could not be read or decoded: its row, id, name (path or shard:key) and why."""

    row: int
    id: str
    name: str
    reason: str

    def error(self) -> BadImageError:
        """The named error this sample raises when bad samples are not skipped."""
        return BadImageError(self.name, self.reason)


def read_file(path: str | Path) -> bytes:
    """An image file's bytes; a dangling link, an empty or unreadable file raises :class:`BadImageError`."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError(path, f"dangling symlink (to {os.readlink(path)})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadImageError(path, f"cannot read: {e}") from e
    if not data:
        raise BadImageError(path, "file is empty (0 bytes)")
    return data


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one image file to RGB (see :func:`decode_image`)."""
    return decode_image(read_file(path), path, max_pixels)


def decode_image(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to RGB, applying EXIF orientation; any fault raises :class:`BadImageError`
    naming ``name``."""
    if not data:
        raise BadImageError(name, "image is empty (0 bytes)")
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
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


def image_suffix(data: bytes) -> str:
    """``png``, ``webp`` or ``jpg`` from the image's magic bytes (the member suffix in a shard)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"
