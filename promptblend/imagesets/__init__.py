"""Image sets, the one home: a protocol (:class:`ImageSet`) and three sources behind it.

- a folder of images (id = file stem; ``prompts.csv`` beside them, or the competition's layout
  ``SET/images/`` + ``SET/prompts.csv``) — :mod:`.folder`;
- WebDataset tar shards (img2dataset's layout; ``sizes.json`` checked) — :mod:`.shards`;
- Parquet (an image-bytes column, Hugging Face's ``{bytes, path}`` struct too, and a prompt column;
  DiffusionDB's metadata with its image parts) — :mod:`.parquet`.

Sources never import each other; they share :mod:`.decode` (the one decode) and :mod:`.base`.
:mod:`.batches` is the one torch dataset over any of them. ``--skip-bad`` is applied in one place,
:func:`open_image_set` (through :func:`.batches.drop_bad`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ImageSetError
from . import folder, parquet, shards
from .base import Concat, ImageSet, Raw, Sample, part_index
from .decode import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    BadSample,
    decode_image,
    image_suffix,
    load_image,
)
from .folder import read_prompts_csv


def _own_truth(opener):
    """An opener for a source that carries its truth itself (no ``prompts.csv``, no recursion)."""

    def open_(source: Any, skip_bad: bool, prompts_csv: str | Path | None, recursive: bool) -> ImageSet:
        if prompts_csv is not None:
            raise ConfigError(f"{source}: this set brings its own prompts; prompts_csv is for folders")
        return opener(source, skip_bad)

    return open_


#: ``name: (claims(source), open(source, skip_bad, prompts_csv, recursive))``, tried in this order.
SOURCES = {
    "folder": (folder.claims, lambda source, skip_bad, prompts_csv, recursive:
               folder.open_folder(source, prompts_csv, recursive, skip_bad)),
    "parquet": (parquet.claims, _own_truth(lambda source, skip_bad: parquet.open_parquet_set(source))),
    "shards": (shards.claims, _own_truth(shards.open_shard_set)),
}

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_PIXELS", "BadSample", "Concat", "ImageSet", "Raw", "Sample", "decode_image",
    "image_suffix", "is_image_set", "load_image", "open_image_set", "part_index", "read_prompts_csv",
    "source_kind",
]


def source_kind(source: Any) -> str | None:
    """The name of the source that reads ``source`` (``folder``, ``parquet``, ``shards``), or None."""
    if isinstance(source, ImageSet):
        return None
    return next((name for name, (claims, _) in SOURCES.items() if claims(source)), None)


def is_image_set(source: Any) -> bool:
    """Whether ``source`` is an opened set or something a source reads (it may still fail to open)."""
    return isinstance(source, ImageSet) or source_kind(source) is not None


def open_image_set(source: Any, prompts_csv: str | Path | None = None, skip_bad: bool = False,
                   recursive: bool = False, workers: int | None = None) -> ImageSet:
    """Open an image set: an opened set as is, else the first source that claims ``source``.

    ``prompts_csv`` and ``recursive`` apply to folders. Without ``skip_bad`` a bad image raises
    :class:`~promptblend.errors.BadImageError` when it is read; with it every image is decoded now (in
    ``workers`` DataLoader workers) and the bad ones are left out and listed in ``skipped``.
    """
    if isinstance(source, ImageSet):
        image_set = source
    else:
        kind = source_kind(source)
        if kind is None:
            text = ", ".join(map(os.fspath, source)) if isinstance(source, (list, tuple)) else os.fspath(source)
            if not isinstance(source, (list, tuple)) and not Path(text).exists():
                raise ImageSetError(f"image set not found: {text}")
            found = f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {text}" if Path(text).is_dir() else \
                f"{text} is not an image set"
            raise ImageSetError(f"{found}: give a folder of images, a folder with images/ and prompts.csv (the "
                                "competition's layout), a .parquet (or a folder of them), or WebDataset .tar shards")
        image_set = SOURCES[kind][1](source, skip_bad, prompts_csv, recursive)
    if skip_bad:
        from .batches import drop_bad

        image_set = drop_bad(image_set, _default_workers() if workers is None else workers)
    return image_set


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))
