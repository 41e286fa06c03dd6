"""A small learnable image-prompt set for trainer tests: coloured shapes on coloured backgrounds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 170), "white": (245, 245, 245), "black": (15, 15, 15), "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle")


def make_shapes(folder: Path, n: int, size: int = 48, seed: int = 0) -> Path:
    """Draw ``n`` PNGs with ``prompts.csv`` ("a red circle on a blue background") into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        fg, bg = rng.choice(len(names), 2, replace=False)
        shape = SHAPES[rng.integers(len(SHAPES))]
        im = Image.new("RGB", (size, size), COLOURS[names[bg]])
        draw = ImageDraw.Draw(im)
        r = int(rng.integers(size // 4, size // 2 - 2))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[names[fg]])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[names[fg]])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[names[fg]])
        img_id = f"shape{i:04d}"
        im.save(folder / f"{img_id}.png")
        rows.append((img_id, f"a {names[fg]} {shape} on a {names[bg]} background"))
    with open(folder / "prompts.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["imgId", "prompt"])
        w.writerows(rows)
    return folder
