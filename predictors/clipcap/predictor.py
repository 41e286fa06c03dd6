"""The ``clipcap`` predictor: generated prompt text and its MiniLM embedding."""

from __future__ import annotations

from typing import ClassVar

from promptblend.embed import encode
from promptblend.errors import ConfigError

from ..base import Prediction
from ..training import TrainedClipPredictor
from .trainer import PRESETS


class ClipCapPredictor(TrainedClipPredictor):
    """Loads a folder trained by ``python -m predictors.clipcap.train`` (``checkpoint=``); decodes
    with ``decoding`` = greedy / beam (``num_beams``) / nucleus (``top_p``, ``temperature``)."""

    kind = "clipcap"
    presets = PRESETS
    trainer = "predictors.clipcap.train"
    produces_text: ClassVar[bool] = True

    def __init__(
        self,
        decoding: str = "greedy",
        max_new_tokens: int = 40,
        num_beams: int = 4,
        top_p: float = 0.9,
        temperature: float = 1.0,
        **params,
    ) -> None:
        from .model import DECODINGS

        super().__init__(
            decoding=decoding, max_new_tokens=max_new_tokens, num_beams=num_beams, top_p=top_p,
            temperature=temperature, **params,
        )
        if decoding not in DECODINGS:
            raise ConfigError(f"unknown decoding '{decoding}'; use one of {', '.join(DECODINGS)}")
        self.generation = dict(
            decoding=decoding, max_new_tokens=max_new_tokens, num_beams=num_beams, top_p=top_p, temperature=temperature
        )

    def build_head(self, clip_dim: int):
        from . import model as cc

        if self.checkpoint is not None:
            head, self.tokenizer = cc.load_trained(self.checkpoint, self.arch, clip_dim)
        else:
            self.tokenizer = cc.load_tokenizer(self.arch["gpt2"]) if self.arch.get("gpt2") else cc.train_tokenizer([], 257)
            head = cc.ClipCapModel(clip_dim, cc.build_gpt2(self.arch, self.tokenizer), **cc.mapping_settings(self.arch))
        return head

    def predict_batch(self, batch) -> Prediction:
        import torch

        from .model import generate

        self.ensure_setup()
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            prompts = generate(self.head, self.tokenizer, self.clip_features(batch), **self.generation)
        return Prediction(encode(prompts), prompts)
