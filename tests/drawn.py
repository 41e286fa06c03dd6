"""Check a saved plot for real: it opens as an image of a sensible size and is not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def assert_drawn(path: Path, min_size: tuple[int, int] = (300, 200), min_ink: float = 0.02) -> np.ndarray:
    """Open ``path`` as an image; assert its size, that >= ``min_ink`` of it is not background, and colour."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w, _ = rgb.shape
    assert w >= min_size[0] and h >= min_size[1], f"{path.name}: {w}x{h} is smaller than {min_size}"
    background = rgb[0, 0]
    ink = np.any(rgb != background, axis=2).mean()
    assert ink >= min_ink, f"{path.name} is blank: {ink:.1%} of its pixels differ from the background"
    colours = len(np.unique(rgb.reshape(-1, 3)[:: max(1, h * w // 200_000)], axis=0))
    assert colours >= 8, f"{path.name} has only {colours} colours"
    return rgb
