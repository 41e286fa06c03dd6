"""The trained-predictor base: a CLIP image encoder plus a head trained by the loop (or random weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from promptblend.clip import is_weights_file
from promptblend.errors import ConfigError, ModelNotFoundError

from ..base import Predictor
from .checkpoint import load_weights
from .config import arch_of
from .data import clip_key
from .loop import CONFIG_FILE, MODEL_FILE


def load_training_config(checkpoint: str | Path, kind: str) -> dict:
    """``config.json`` of a trained folder of ``kind``; a missing folder or weights raise :class:`ModelNotFoundError`."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise ModelNotFoundError(f"{kind} checkpoint folder not found: {path}")
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise ModelNotFoundError(f"{path} is not a trained {kind} folder (needs {CONFIG_FILE} and {MODEL_FILE})")
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("kind") != kind:
        raise ConfigError(f"{path} holds a {config.get('kind')} model, not {kind}")
    return config


class TrainedClipPredictor(Predictor):
    """A CLIP image encoder plus a head trained by :func:`~.loop.fit` (or randomly initialised).

    ``checkpoint``: a trained folder; ``init``: a trainer preset to build with random weights when
    there is no checkpoint (the ``-tiny`` entries); ``clip_model`` / ``clip_pretrained``: override
    the CLIP recorded in the checkpoint (e.g. a moved weights file) or the preset's. The device is
    the runner's (``self.device``; None = CUDA when available). ``finetuned`` is true when the folder
    (or preset) trained the tower itself.
    """

    kind: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict]] = {}
    trainer: ClassVar[str] = ""

    def __init__(
        self,
        checkpoint: str | None = None,
        init: str | None = None,
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        seed: int = 0,
        **params: Any,
    ) -> None:
        super().__init__(
            checkpoint=checkpoint, init=init, clip_model=clip_model, clip_pretrained=clip_pretrained, seed=seed, **params
        )
        if checkpoint:
            self.train_config = load_training_config(checkpoint, self.kind)
            arch, clip = self.train_config["arch"], tuple(self.train_config["clip"])
            self.finetuned = bool(self.train_config["train"].get("finetune"))
            if clip_model and clip_model != clip[0]:
                raise ConfigError(f"{checkpoint} was trained on CLIP {clip[0]}, not {clip_model}")
        elif init:
            if init not in self.presets:
                raise ConfigError(f"unknown init preset '{init}' for {self.kind}; known: {', '.join(self.presets)}")
            self.train_config = None
            arch, clip, self.finetuned = arch_of(self.presets[init])
        else:
            raise ConfigError(
                f"{self.kind} needs checkpoint=DIR (train one with python -m {self.trainer}) "
                f"or init=PRESET for random weights"
            )
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.arch = arch
        self.clip = (clip_model or clip[0], clip_pretrained or clip[1])
        weights = self.clip[1]
        if weights and not self.finetuned and is_weights_file(weights) and not Path(weights).is_file():
            raise ModelNotFoundError(f"CLIP weights file not found: {weights} (pass clip_pretrained=PATH)")
        self.seed = seed
        self.bundle = None

    def cache_inputs(self) -> dict[str, Any]:
        """Content digests of the trained folder's config and weights, and of the CLIP weights."""
        from promptblend.digest import file_digest

        inputs: dict[str, Any] = {"clip": clip_key(self.clip) if not self.finetuned else self.clip[0]}
        if self.checkpoint is not None:
            inputs["checkpoint"] = ":".join(file_digest(self.checkpoint / n)[:16] for n in (CONFIG_FILE, MODEL_FILE))
        return inputs

    def build_head(self, clip_dim: int):
        """Create the (untrained) head for a CLIP of width ``clip_dim``."""
        raise NotImplementedError

    def setup(self) -> None:
        import torch

        from promptblend.clip import load_clip

        self.bundle = load_clip(self.clip[0], self.clip[1], self.device)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.head = self.build_head(self.bundle.embed_dim)
        if self.checkpoint is not None:
            load_weights(self.head, self.checkpoint / MODEL_FILE)
        self.head.to(self.bundle.device).eval()

    def preprocess(self, image):
        """The CLIP transform of one image (a tensor)."""
        return self.transform()(image)

    def transform(self):
        """The CLIP image transform alone (light, picklable): what DataLoader workers get."""
        if self.bundle is None:
            self.ensure_setup()
        return self.bundle.preprocess

    def collate(self, items: list):
        """Stack image tensors."""
        import torch

        return torch.stack(items)

    def clip_features(self, pixels):
        """Unit CLIP embeddings of a batch, as a tensor on the model's device."""
        import torch

        from promptblend.clip import embed_images

        return torch.from_numpy(embed_images(self.bundle, pixels)).to(self.bundle.device)
