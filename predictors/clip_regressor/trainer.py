"""The Python API of the clip-regressor trainer: presets and ``train_regressor`` (the CLI is ``train.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from promptblend.clip import TINY_CLIP
from promptblend.images import ImageSet

from .. import training

#: Trainer presets: loop settings, ``clip`` = (open_clip model, pretrained) and head architecture.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "clip": ["ViT-B-32", "openai"], "hidden": 1024, "dropout": 0.1,
        "epochs": 10, "batch_size": 256, "lr": 1e-3,
    },
    "tiny": {
        "clip": [TINY_CLIP, None], "hidden": 256, "dropout": 0.1,
        "epochs": 20, "batch_size": 32, "lr": 2e-3,
    },
}


def train_regressor(
    images: ImageSet | str | Path | Sequence[str | Path],
    prompts: str | Path | dict[str, str] | Sequence[str] | None,
    out: str | Path,
    config: str | Path | dict = "default",
    clip: tuple[str, str | None] | None = None,
    **settings: Any,
) -> Path:
    """Train a CLIP -> 384-d head on image-prompt pairs into ``out`` (resumes a killed run).

    ``config``: a preset (``default``, ``tiny``), JSON file or dict; ``clip``: (open_clip model,
    pretrained tag or weights file); ``settings``: loop settings (epochs, batch_size, lr, val_frac,
    seed, device, num_workers, progress...) or head settings (hidden, dropout).
    """
    from .model import RegressorTask

    return training.train(RegressorTask, PRESETS, images, prompts, out, config, clip=clip, **settings)
