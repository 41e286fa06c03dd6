"""The Python API of the clipcap trainer: presets and ``train_clipcap`` (the CLI is ``train.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from promptblend.clip import TINY_CLIP
from promptblend.images import ImageSet

from .. import training

#: Trainer presets: loop settings, ``clip`` = (open_clip model, pretrained) and the architecture.
#: ``default`` is ClipCap's transformer-mapping setup (CLIP ViT-B/32, GPT-2 by name or path);
#: ``tiny`` builds a small random GPT-2 with a byte-level BPE learnt on the training prompts; being
#: random, all of it trains (``trainable_blocks`` None), fed by ClipCap's MLP mapping (demo held-out
#: greedy score 0.53 vs 0.52 with the transformer mapping and 3 trainable blocks, and faster).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "clip": ["ViT-B-32", "openai"], "gpt2": "gpt2",
        "prefix_length": 10, "clip_length": 10, "mapping_layers": 8, "mapping_heads": 8,
        "trainable_blocks": 2, "dropout": 0.1, "max_tokens": 60,
        "epochs": 10, "batch_size": 40, "lr": 2e-5,
    },
    "tiny": {
        "clip": [TINY_CLIP, None], "gpt2": None, "vocab_size": 600,
        "n_embd": 64, "n_layer": 3, "n_head": 4, "n_positions": 96, "embed_std": 0.25, "initializer_range": 0.2,
        "mapping": "mlp", "prefix_length": 8, "clip_length": 4, "mapping_layers": 2, "mapping_heads": 4,
        "trainable_blocks": None, "dropout": 0.0, "max_tokens": 32,
        "epochs": 10, "batch_size": 16, "lr": 2e-3,
    },
}


def train_clipcap(
    images: ImageSet | str | Path | Sequence[str | Path],
    prompts: str | Path | dict[str, str] | Sequence[str] | None,
    out: str | Path,
    config: str | Path | dict = "default",
    clip: tuple[str, str | None] | None = None,
    **settings: Any,
) -> Path:
    """Train ClipCap on image-prompt pairs into ``out`` (resumes a killed run); return ``out``.

    ``config``: a preset (``default``, ``tiny``), JSON file or dict; ``clip``: (open_clip model,
    pretrained tag or weights file); ``settings``: loop settings (epochs, batch_size, lr, val_frac,
    seed, device, num_workers, progress...) or architecture settings (gpt2, prefix_length, ...).
    """
    from .task import ClipCapTask

    return training.train(ClipCapTask, PRESETS, images, prompts, out, config, clip=clip, **settings)
