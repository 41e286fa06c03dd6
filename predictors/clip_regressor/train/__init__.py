"""The clip-regressor trainer's Python API: presets (``predictors/configs/train/clip-regressor.json``) and
``train_regressor`` (frozen-feature head, or the tower fine-tuned end to end); the CLI is ``__main__``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import training
from ...training.data import Images, Prompts

#: Trainer presets: loop settings, ``clip`` = (open_clip model, pretrained) and head architecture.
PRESETS: dict[str, dict[str, Any]] = training.load_presets("clip-regressor")


def train_regressor(
    images: Images,
    prompts: Prompts,
    out: str | Path,
    config: str | Path | dict = "default",
    clip: tuple[str, str | None] | None = None,
    val_images: Images | None = None,
    **settings: Any,
) -> Path:
    """Train a CLIP -> 384-d regressor on image-prompt pairs into ``out`` (resumes a killed run).

    ``config``: a preset (``default``, ``tiny``, ``finetune``, ``finetune-tiny``), JSON file or dict;
    ``clip``: (open_clip model, pretrained tag or weights file); ``val_images``: a separate validation
    set; ``settings``: loop settings (epochs, max_steps, batch_size, lr, head_lr, finetune, llrd, ema,
    amp, ...; see :class:`~predictors.training.TrainConfig`) or head settings (hidden, dropout).
    """
    from ..model import RegressorTask

    return training.train(RegressorTask, PRESETS, images, prompts, out, config, val_images, clip=clip, **settings)
