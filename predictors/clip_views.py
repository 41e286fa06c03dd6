"""CLIP image views for the CLIP-based predictors (clip-regressor, knn, clip-text-map): the eval transform
of an open_clip model, a ViT tower at another input size (position embeddings interpolated), and
test-time augmentation: ``tta=`` lists views, each predicted alone, L2-normalised, then averaged.

A view is ``{"resize": R, "norm": N, "flip": false}``: the image's shorter side is resized to ``R``
(default: the model's input size) and centre-cropped to the input size, so ``R`` above it zooms in;
``N`` is a statistics name (``openai``, ``imagenet``, ``inception``) or ``{"mean": [...], "std": [...]}``
(default: the model's own); ``flip`` mirrors the image (available, off: the 3rd team found flips hurt).
An empty ``tta`` is the one default view, and predictions are then what they were without TTA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptblend.errors import ConfigError
from promptblend.vectors import l2_normalise

#: Normalisation statistics by name (open_clip's constants).
NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "openai": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
VIEW_KEYS = ("resize", "norm", "flip")


@dataclass(frozen=True)
class View:
    """One test-time view: shorter side resized to ``resize`` (None: the input size), then centre-cropped
    to the input size; ``mean``/``std`` (None: the model's); ``flip``: mirrored left-right."""

    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flip: bool = False


def _norm(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(value, str):
        if value not in NORMS:
            raise ConfigError(f"tta: unknown norm '{value}'; known: {', '.join(NORMS)} or {{\"mean\": [...], \"std\": [...]}}")
        return NORMS[value]
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        mean, std = (tuple(float(x) for x in value[k]) for k in ("mean", "std"))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"tta: norm needs 3 means and 3 positive stds, got {value}")
        return mean, std
    raise ConfigError(f"tta: norm must be a name ({', '.join(NORMS)}) or {{\"mean\": [...], \"std\": [...]}}, got {value!r}")


def parse_views(tta: Sequence[dict] | None) -> tuple[View, ...]:
    """The views of a ``tta`` config value (a list of dicts); None or empty: the one default view."""
    if not tta:
        return (View(),)
    if not isinstance(tta, (list, tuple)) or not all(isinstance(v, dict) for v in tta):
        raise ConfigError(f"tta must be a list of views (dicts with {', '.join(VIEW_KEYS)}), got {tta!r}")
    views = []
    for spec in tta:
        unknown = sorted(set(spec) - set(VIEW_KEYS))
        if unknown:
            raise ConfigError(f"tta: unknown view key(s) {', '.join(unknown)}; valid: {', '.join(VIEW_KEYS)}")
        resize = spec.get("resize")
        if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
            raise ConfigError(f"tta: resize must be a positive integer (pixels), got {resize!r}")
        mean, std = _norm(spec["norm"]) if spec.get("norm") is not None else (None, None)
        views.append(View(resize, mean, std, bool(spec.get("flip", False))))
    return tuple(views)


@functools.lru_cache(maxsize=8)
def clip_image_transform(model_name: str, pretrained: str | None, image_size: int | None = None):
    """The eval image transform of an open_clip model (at ``image_size`` when given), built from its
    config without its weights."""
    import open_clip

    from promptblend.clip import load_clip, register_clip_configs

    register_clip_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:  # hf-hub or other remote configs: take it from the loaded model
        base = load_clip(model_name, pretrained).preprocess
        return base if image_size is None else view_transform(base, View(), image_size)
    pp = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    return open_clip.image_transform(
        image_size or cfg["vision_cfg"]["image_size"],
        is_train=False,
        mean=pp.get("mean"),
        std=pp.get("std"),
        resize_mode=pp.get("resize_mode"),
        interpolation=pp.get("interpolation"),
    )


def view_transform(base, view: View, size: int | None = None):
    """``base`` (an open_clip eval transform: resize, centre crop, mode, tensor, normalise) changed to
    ``view`` at input size ``size`` (default: ``base``'s)."""
    from torchvision import transforms as T

    resize, crop, *middle, normalise = base.transforms
    size = size or crop.size[0]
    steps = [T.Resize(view.resize or size, interpolation=resize.interpolation), T.CenterCrop(size), *middle]
    steps.append(T.Normalize(view.mean, view.std) if view.mean is not None else normalise)
    if view.flip:
        steps.append(T.RandomHorizontalFlip(p=1.0))
    return T.Compose(steps)


class ViewsTransform:
    """One image -> its views stacked as (V, 3, H, W) (picklable: what DataLoader workers run)."""

    def __init__(self, base, views: Sequence[View], size: int | None = None) -> None:
        self.transforms = [view_transform(base, v, size) for v in views]

    def __call__(self, image):
        import torch

        return torch.stack([t(image) for t in self.transforms])


def views_transform(base, views: Sequence[View], size: int | None = None) -> Callable:
    """The transform of ``views``: ``base`` itself for the one default view (at its own size), else
    a :class:`ViewsTransform` whose batches are (B, V, 3, H, W)."""
    if tuple(views) == (View(),) and size is None:
        return base
    if len(views) == 1:
        return view_transform(base, views[0], size)
    return ViewsTransform(base, views, size)


def average_views(predict: Callable[[Any], np.ndarray], batch) -> np.ndarray:
    """``predict`` a pixel batch; for a (B, V, 3, H, W) batch of views, predict each view, L2-normalise
    its rows and return the normalised mean (unit rows, float32)."""
    if batch.ndim != 5:
        return predict(batch)
    total = sum(l2_normalise(np.asarray(predict(batch[:, v]), np.float32)) for v in range(batch.shape[1]))
    return l2_normalise(total)


def resize_tower(visual, image_size: int) -> None:
    """Make an open_clip ViT tower take ``image_size`` px inputs (a multiple of its patch size) by
    interpolating its position embeddings (open_clip's ``resize_pos_embed``), in place."""
    from types import SimpleNamespace

    import torch
    from open_clip.model import resize_pos_embed

    if not hasattr(visual, "positional_embedding") or not hasattr(visual, "patch_size"):
        raise ConfigError(f"image_size needs an open_clip ViT tower, not {type(visual).__name__}")
    patch = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
    if image_size < patch or image_size % patch:
        raise ConfigError(f"image_size must be a multiple of the patch size {patch}, got {image_size}")
    grid = image_size // patch
    state = {"visual.positional_embedding": visual.positional_embedding.detach()}
    resize_pos_embed(state, SimpleNamespace(visual=SimpleNamespace(grid_size=(grid, grid))))
    visual.positional_embedding = torch.nn.Parameter(state["visual.positional_embedding"].contiguous())
    visual.grid_size, visual.image_size = (grid, grid), (image_size, image_size)
