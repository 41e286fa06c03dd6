"""The clipcap trainer's Python API: presets (``predictors/configs/train/clipcap.json``) and ``train_clipcap``;
the CLI is ``__main__``.

``default`` is ClipCap's transformer-mapping setup (CLIP ViT-B/32, GPT-2 by name or path, its last
``trainable_blocks`` = 2 blocks unfrozen); ``tiny`` builds a small random GPT-2 with a byte-level BPE
learnt on the training prompts; being random, all of it trains (``trainable_blocks`` null), fed by
ClipCap's MLP mapping (demo held-out greedy score 0.53 vs 0.52 with the transformer mapping and 3
trainable blocks, and faster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import training
from ...training.data import Images, Prompts

#: Trainer presets: loop settings, ``clip`` = (open_clip model, pretrained) and the architecture.
PRESETS: dict[str, dict[str, Any]] = training.load_presets("clipcap")


def train_clipcap(
    images: Images,
    prompts: Prompts,
    out: str | Path,
    config: str | Path | dict = "default",
    clip: tuple[str, str | None] | None = None,
    val_images: Images | None = None,
    **settings: Any,
) -> Path:
    """Train ClipCap on image-prompt pairs into ``out`` (resumes a killed run); return ``out``.

    ``config``: a preset (``default``, ``tiny``), JSON file or dict; ``clip``: (open_clip model,
    pretrained tag or weights file); ``settings``: loop settings (epochs, batch_size, lr, val_frac,
    seed, device, num_workers, progress...) or architecture settings (gpt2, trainable_blocks, ...).
    """
    from ..task import ClipCapTask

    return training.train(ClipCapTask, PRESETS, images, prompts, out, config, val_images, clip=clip, **settings)
