"""What the predictors over a prompt bank's CLIP keys share (``knn``, ``clip-text-map``): the bank folder
named by one parameter and keyed by its manifest, the CLIP that embedded its keys (checked against the
bank), and that CLIP's image transform with test-time views (:mod:`.clip_views`)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from promptblend.errors import ConfigError

from .base import Predictor
from .clip_views import (
    average_views,
    clip_image_transform,
    parse_views,
    views_transform,
)


class ClipBankPredictor(Predictor):
    """A predictor that embeds images with the CLIP of a bank's keys (``index.build --keys MODEL``).

    Subclasses name their registry ``label`` and the ``bank_param`` holding the bank folder; that folder
    (index files of many GB) is keyed by its manifest, never hashed whole.
    """

    label: ClassVar[str]
    bank_param: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.unhashed_paths = (cls.bank_param,)

    def __init__(self, bank: str | None, clip_model: str, clip_pretrained: str | None, device: str | None,
                 tta: list | None, **params: Any) -> None:
        super().__init__(**{self.bank_param: bank, "clip_model": clip_model, "clip_pretrained": clip_pretrained,
                            **params, "tta": tta, "device": device})
        self.bank_path, self.clip_model, self.clip_pretrained, self.device = bank, clip_model, clip_pretrained, device
        self.views = parse_views(tta)

    def cache_inputs(self) -> dict[str, Any]:
        """Local CLIP weights by content (see :meth:`Predictor.cache_inputs`) and the bank by its manifest,
        so new weights or a rebuilt bank make a new run."""
        from promptblend.bank import manifest_digest

        inputs = super().cache_inputs()
        if self.bank_path and manifest_digest(self.bank_path):
            inputs["bank"] = manifest_digest(self.bank_path)
        return inputs

    def open_bank(self):
        """Open the bank, check that its keys come from this CLIP, load the CLIP (``self.clip``); the bank."""
        from promptblend.bank import load_bank
        from promptblend.clip import load_clip

        if not self.bank_path:
            raise ConfigError(f"{self.label} needs a bank: pass {self.bank_param}=/path/to/bank "
                              "(built by python -m index.build --keys ...)")
        bank = load_bank(str(self.bank_path))
        bank.check_key_model(self.clip_model, self.clip_pretrained)
        self.clip = load_clip(self.clip_model, self.clip_pretrained, self.device)
        return bank

    def transform(self):
        """The CLIP image transform with the ``tta`` views (light, picklable): what DataLoader workers get."""
        return views_transform(clip_image_transform(self.clip_model, self.clip_pretrained), self.views)

    def preprocess(self, image):
        """RGB image -> CLIP pixels (3, H, W), or its views (V, 3, H, W)."""
        return self.transform()(image)

    def collate(self, items: list) -> Any:
        """Stack pixel tensors."""
        import torch

        return torch.stack(items)

    def embed(self, batch) -> np.ndarray:
        """Unit CLIP image embeddings of a batch, its views averaged."""
        from promptblend.clip import embed_images

        return average_views(lambda x: embed_images(self.clip, x), batch)
