"""``knn``: CLIP image embedding -> FAISS search over a prompt bank's CLIP keys -> mean of the
top-k neighbours' MiniLM values weighted by a softmax of their similarities (``k``, ``temperature``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from promptblend.errors import ConfigError
from promptblend.vectors import l2_normalise

from .base import Prediction, Predictor
from .clip_views import (
    average_views,
    clip_image_transform,
    parse_views,
    views_transform,
)


def weighted_neighbours(sims: np.ndarray, rows: np.ndarray, values: np.ndarray, temperature: float) -> np.ndarray:
    """Unit rows: softmax(sims / temperature)-weighted mean of ``values[rows]`` (rows < 0 ignored)."""
    valid = rows >= 0
    logits = np.where(valid, sims / temperature, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits) * valid
    weights /= weights.sum(axis=1, keepdims=True)
    neighbours = np.asarray(values[np.where(valid, rows, 0).ravel()], dtype=np.float32)
    neighbours = neighbours.reshape(*rows.shape, values.shape[1])
    return l2_normalise(np.einsum("bk,bkd->bd", weights.astype(np.float32), neighbours))


class KnnPredictor(Predictor):
    """Nearest bank prompts of each image, averaged. ``index`` is a bank folder from ``index.build``
    whose keys were embedded by the same CLIP (``clip_model``/``clip_pretrained``); ``tta``: views whose
    unit image embeddings are averaged before the search (:mod:`.clip_views`)."""

    #: The bank folder (index files of many GB) is keyed by its manifest, not by hashing it whole.
    unhashed_paths = ("index",)

    def __init__(self, index: str | None = None, clip_model: str = "ViT-H-14",
                 clip_pretrained: str | None = "laion2b_s32b_b79k", k: int = 10, temperature: float = 0.05,
                 device: str | None = None, tta: list | None = None) -> None:
        super().__init__(index=index, clip_model=clip_model, clip_pretrained=clip_pretrained, k=k,
                         temperature=temperature, device=device, tta=tta)
        self.views = parse_views(tta)
        if int(k) < 1:
            raise ConfigError(f"knn: k must be >= 1, got {k}")
        if float(temperature) <= 0:
            raise ConfigError(f"knn: temperature must be > 0, got {temperature}")
        self.index, self.k, self.temperature = index, int(k), float(temperature)
        self.clip_model, self.clip_pretrained, self.device = clip_model, clip_pretrained, device

    def cache_inputs(self) -> dict[str, Any]:
        """Local CLIP weights by content (see :meth:`Predictor.cache_inputs`) and the bank by its
        manifest, so new weights or a rebuilt bank make a new run."""
        from promptblend.bank import manifest_digest

        inputs = super().cache_inputs()
        if self.index and manifest_digest(self.index):
            inputs["bank"] = manifest_digest(self.index)
        return inputs

    def setup(self) -> None:
        """Open the bank, check its key model, load CLIP."""
        from promptblend.bank import load_bank
        from promptblend.clip import load_clip

        if not self.index:
            raise ConfigError("knn needs a bank: pass index=/path/to/bank (built by python -m index.build --keys ...)")
        self.bank = load_bank(str(self.index))
        self.bank.check_key_model(self.clip_model, self.clip_pretrained)
        self.clip = load_clip(self.clip_model, self.clip_pretrained, self.device)

    def preprocess(self, image):
        """RGB image -> CLIP pixel tensor (3, H, W)."""
        return self.transform()(image)

    def transform(self):
        """The CLIP image transform alone (light, picklable): what DataLoader workers get."""
        return views_transform(clip_image_transform(self.clip_model, self.clip_pretrained), self.views)

    def collate(self, items: list) -> Any:
        """Stack pixel tensors."""
        import torch

        return torch.stack(items)

    def predict_batch(self, batch) -> Prediction:
        """CLIP image embeddings -> bank search -> weighted neighbour values."""
        from promptblend.clip import embed_images

        self.ensure_setup()
        sims, rows = self.bank.search(average_views(lambda x: embed_images(self.clip, x), batch), self.k)
        return Prediction(weighted_neighbours(sims, rows, self.bank.values, self.temperature))
