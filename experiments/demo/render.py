"""Procedural images for the demo task: a scene, coloured objects on it, then a style filter.

Everything visible (object colour, shape and count, scene, style) is drawn from a :class:`Scene`;
positions, sizes, rotations and colour jitter are the image's own noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

#: Object colour words and their base RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "blue": (35, 80, 220),
    "purple": (130, 50, 170),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (120, 70, 35),
}

#: Object name -> plural (the shape each draws is in ``_draw_mask``).
OBJECTS: dict[str, str] = {
    "ball": "balls",
    "box": "boxes",
    "pyramid": "pyramids",
    "star": "stars",
    "ring": "rings",
    "cross": "crosses",
    "diamond": "diamonds",
    "moon": "moons",
    "heart": "hearts",
    "flower": "flowers",
}

#: Scene phrase -> background painter name.
SCENES: dict[str, str] = {
    "in a green meadow": "meadow",
    "on a sandy beach": "beach",
    "under a starry night sky": "night",
    "in the snow": "snow",
    "on a checkered floor": "checkered",
    "against a striped wall": "striped",
    "at sunset": "sunset",
    "underwater": "underwater",
    "in a dark room": "dark",
    "in a foggy forest": "forest",
}

#: Style phrase (all from clip-interrogator's ``mediums.txt``) -> filter name.
STYLES: dict[str, str] = {
    "a photo": "photo",
    "a watercolor painting": "watercolor",
    "a pencil sketch": "sketch",
    "a pop art painting": "popart",
    "pixel art": "pixel",
    "a black and white photo": "bw",
    "an oil painting": "oil",
    "a mosaic": "mosaic",
    "a polaroid photo": "polaroid",
}

COUNTS = ("a", "two", "three")


@dataclass(frozen=True)
class Scene:
    """What an image shows: ``count`` (1-3) objects of one colour and kind, a scene and a style."""

    count: int
    colour: str
    obj: str
    scene: str
    style: str

    def subject(self) -> str:
        """``a red ball`` / ``two red balls``."""
        noun = self.obj if self.count == 1 else OBJECTS[self.obj]
        article = COUNTS[self.count - 1]
        if article == "a" and self.colour[0] in "aeiou":
            article = "an"
        return f"{article} {self.colour} {noun}"


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` at 2x ``size`` and return an RGB image of ``size`` x ``size``."""
    big = 2 * size
    canvas = Image.fromarray(_BACKGROUNDS[SCENES[scene.scene]](big, rng))
    base = np.array(COLOURS[scene.colour], np.float64)
    radius = big * (0.22 if scene.count == 1 else 0.16 if scene.count == 2 else 0.13) * rng.uniform(0.85, 1.15)
    for cx, cy in _positions(scene.count, big, radius, rng):
        colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 12, 3), 0, 255))
        mask = _draw_mask(scene.obj, big, cx, cy, radius, rng.uniform(-25, 25))
        box = mask.getbbox()
        if box:
            canvas.paste(_shading(box, cx, cy, radius, colour), box[:2], mask.crop(box))
    canvas = _FILTERS[STYLES[scene.style]](canvas, rng)
    return canvas.resize((size, size), Image.LANCZOS).convert("RGB")


def _positions(count: int, big: int, radius: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    if count == 1:
        return [(big / 2 + rng.uniform(-0.12, 0.12) * big, big / 2 + rng.uniform(-0.1, 0.1) * big)]
    slots = np.linspace(radius + 4, big - radius - 4, count)
    rng.shuffle(slots)
    return [(x + rng.uniform(-4, 4), big * rng.uniform(0.35, 0.65)) for x in slots]


def _shading(box: tuple[int, int, int, int], cx: float, cy: float, radius: float, colour) -> Image.Image:
    """A colour layer over ``box`` lit from the top left, so objects look a little solid."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    light = 1.15 - 0.35 * np.clip(((xx - cx + radius) + (yy - cy + radius)) / (4 * radius), 0, 1)
    arr = np.clip(np.array(colour, np.float32)[None, None, :] * light[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, r, r * inner)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))


def _draw_mask(obj: str, big: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    if obj == "ball":
        d.ellipse(box, fill=255)
    elif obj == "box":
        d.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    elif obj == "pyramid":
        d.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=255)
    elif obj == "star":
        d.polygon(_star(cx, cy, r), fill=255)
    elif obj == "ring":
        d.ellipse(box, fill=255)
        d.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    elif obj == "cross":
        w = 0.3 * r
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
    elif obj == "diamond":
        d.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=255)
    elif obj == "moon":
        d.ellipse(box, fill=255)
        d.ellipse((cx - 0.35 * r, cy - 1.05 * r, cx + 1.15 * r, cy + 0.45 * r), fill=0)
    elif obj == "heart":
        h = 0.5 * r
        d.ellipse((cx - r, cy - r + 0.1 * r, cx, cy + 0.1 * r), fill=255)
        d.ellipse((cx, cy - r + 0.1 * r, cx + r, cy + 0.1 * r), fill=255)
        d.polygon([(cx - 0.97 * r, cy - h + 0.25 * r), (cx + 0.97 * r, cy - h + 0.25 * r), (cx, cy + r)], fill=255)
    elif obj == "flower":
        for k in range(6):
            a = k * np.pi / 3
            px, py = cx + 0.55 * r * np.cos(a), cy + 0.55 * r * np.sin(a)
            d.ellipse((px - 0.45 * r, py - 0.45 * r, px + 0.45 * r, py + 0.45 * r), fill=255)
    else:
        raise KeyError(obj)
    if obj in ("box", "star", "cross", "diamond", "heart", "pyramid"):
        mask = mask.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    return mask


# --- backgrounds: (size, rng) -> uint8 (size, size, 3) ---------------------------------------------


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


@lru_cache(maxsize=4)
def _noise_tile(size: int) -> np.ndarray:
    return np.random.default_rng(size).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise (size, size, 3): a random window of a fixed tile (fast)."""
    oy, ox = rng.integers(0, size, 2)
    return _noise_tile(size)[oy : oy + size, ox : ox + size]


def _gradient(size: int, top, bottom, height: int | None = None) -> np.ndarray:
    """A vertical colour ramp, ``height`` (default ``size``) rows by ``size`` columns."""
    t = np.linspace(0, 1, height or size, dtype=np.float32)[:, None, None]
    return (np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t) * np.ones((1, size, 1), np.float32)


def _finish(arr: np.ndarray, rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    arr = arr + noise * _noise(arr.shape[0], rng) + rng.normal(0, 10, (1, 1, 3)).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _meadow(size, rng):
    horizon = int(size * rng.uniform(0.35, 0.5))
    arr = _gradient(size, (120, 180, 240), (200, 225, 250))
    arr[horizon:] = _gradient(size, (90, 170, 60), (40, 110, 30), size - horizon)
    for _ in range(size):
        x, y = rng.integers(0, size), rng.integers(horizon, size)
        arr[max(horizon, y - 4) : y, x] = (30, 90, 25)
    return _finish(arr, rng)


def _beach(size, rng):
    a, b = int(size * rng.uniform(0.3, 0.4)), int(size * rng.uniform(0.5, 0.6))
    arr = _gradient(size, (110, 170, 235), (190, 220, 245))
    arr[a:b] = (40, 110, 190)
    arr[b:] = _gradient(size, (230, 205, 150), (210, 180, 120), size - b)
    return _finish(arr, rng, 9)


def _night(size, rng):
    arr = _gradient(size, (5, 8, 30), (20, 25, 70))
    n = rng.integers(25, 60)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    arr[ys, xs] = 255
    arr[np.clip(ys + 1, 0, size - 1), xs] = 200
    return _finish(arr, rng, 3)


def _snow(size, rng):
    arr = _gradient(size, (200, 210, 225), (245, 248, 252))
    return _finish(arr, rng, 10)


def _checkered(size, rng):
    cell = int(rng.integers(size // 10, size // 5))
    yy, xx = _grid(size)
    board = ((yy // cell + xx // cell) % 2).astype(np.float32)[..., None]
    dark = np.array((30, 30, 30), np.float32) + rng.uniform(0, 40)
    return _finish(dark * board + np.array((235, 235, 230), np.float32) * (1 - board), rng, 4)


def _striped(size, rng):
    width = int(rng.integers(size // 16, size // 8))
    xx = _grid(size)[1]
    stripe = ((xx // width) % 2).astype(np.float32)[..., None]
    a = rng.uniform(120, 220, 3)
    b = np.clip(a * rng.uniform(0.5, 0.7), 0, 255)
    return _finish(a * stripe + b * (1 - stripe), rng, 4)


def _sunset(size, rng):
    arr = _gradient(size, (250, 150, 50), (140, 60, 120))
    horizon = int(size * rng.uniform(0.7, 0.8))
    arr[horizon:] = (40, 25, 40)
    return _finish(arr, rng, 4)


def _underwater(size, rng):
    arr = _gradient(size, (40, 170, 190), (5, 40, 100))
    img = Image.fromarray(_finish(arr, rng, 5))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 12))):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 6)
        d.ellipse((x - r, y - r, x + r, y + r), outline=(200, 240, 250), width=1)
    return np.asarray(img)


def _dark(size, rng):
    yy, xx = _grid(size)
    cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.2, 0.5) * size
    spot = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.3 * size) ** 2)))
    arr = (12 + 70 * spot)[..., None] * np.array((1.0, 0.95, 0.85), np.float32)
    return _finish(arr, rng, 3)


def _forest(size, rng):
    arr = _gradient(size, (170, 180, 175), (100, 120, 100))
    for _ in range(int(rng.integers(5, 10))):
        x, w = int(rng.integers(0, size)), int(rng.integers(size // 40 + 1, size // 15 + 2))
        arr[:, x : x + w] = arr[:, x : x + w] * 0.35 + np.array((40, 35, 25)) * 0.65
    img = Image.fromarray(_finish(arr, rng, 4)).filter(ImageFilter.GaussianBlur(size / 60))
    fog = np.asarray(img).astype(np.float32) * 0.75 + 200 * 0.25
    return np.clip(fog, 0, 255).astype(np.uint8)


_BACKGROUNDS = {
    "meadow": _meadow,
    "beach": _beach,
    "night": _night,
    "snow": _snow,
    "checkered": _checkered,
    "striped": _striped,
    "sunset": _sunset,
    "underwater": _underwater,
    "dark": _dark,
    "forest": _forest,
}


# --- style filters: (PIL image, rng) -> PIL image --------------------------------------------------


def _photo(im, rng):
    return im


def _watercolor(im, rng):
    soft = im.filter(ImageFilter.GaussianBlur(im.width / 50)).filter(ImageFilter.SMOOTH_MORE)
    paper = Image.new("RGB", im.size, (250, 246, 235))
    return ImageEnhance.Color(Image.blend(soft, paper, 0.35)).enhance(1.3)


def _sketch(im, rng):
    edges = ImageOps.invert(im.convert("L").filter(ImageFilter.FIND_EDGES))
    edges = ImageEnhance.Contrast(edges).enhance(2.5)
    return Image.merge("RGB", (edges, edges, edges.point(lambda v: int(v * 0.95))))


def _popart(im, rng):
    return ImageOps.posterize(ImageEnhance.Color(im).enhance(2.2), 2)


def _pixel(im, rng):
    small = im.resize((im.width // 8, im.height // 8), Image.BILINEAR)
    return ImageOps.posterize(small, 4).resize(im.size, Image.NEAREST)


def _bw(im, rng):
    return ImageOps.autocontrast(im.convert("L")).convert("RGB")


def _oil(im, rng):
    blotchy = im.resize((im.width // 5, im.height // 5), Image.BOX).resize(im.size, Image.BICUBIC)
    strokes = rng.standard_normal((im.height, im.width // 4), dtype=np.float32).repeat(4, axis=1)
    arr = np.asarray(ImageOps.posterize(ImageEnhance.Color(blotchy).enhance(1.5), 3), np.float32)
    return Image.fromarray(np.clip(arr * (1 + 0.08 * strokes[..., None]), 0, 255).astype(np.uint8))


def _mosaic(im, rng):
    tile = max(2, im.width // 12)
    small = im.resize((im.width // tile, im.height // tile), Image.BOX).resize(im.size, Image.NEAREST)
    arr = np.array(small)
    arr[::tile] = 60
    arr[:, ::tile] = 60
    return Image.fromarray(arr)


def _polaroid(im, rng):
    arr = np.asarray(im).astype(np.float32)
    grey = arr.mean(axis=2, keepdims=True)
    warm = grey * np.array((1.07, 0.93, 0.72)) * 0.8 + arr * 0.2
    border = max(2, im.width // 14)
    out = np.full_like(arr, 245.0)
    out[border:-border, border:-border] = warm[border:-border, border:-border]
    out[-3 * border :] = 245.0
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


_FILTERS = {
    "photo": _photo,
    "watercolor": _watercolor,
    "sketch": _sketch,
    "popart": _popart,
    "pixel": _pixel,
    "bw": _bw,
    "oil": _oil,
    "mosaic": _mosaic,
    "polaroid": _polaroid,
}
