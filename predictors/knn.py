"""``knn``: CLIP image embedding -> FAISS search over a prompt bank's CLIP keys -> mean of the
top-k neighbours' MiniLM values weighted by a softmax of their similarities (``k``, ``temperature``)."""

from __future__ import annotations

import numpy as np

from promptblend.errors import ConfigError
from promptblend.vectors import l2_normalise

from .base import Prediction
from .clip_bank import ClipBankPredictor


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


class KnnPredictor(ClipBankPredictor):
    """Nearest bank prompts of each image, averaged. ``index`` is a bank folder from ``index.build``
    whose keys were embedded by the same CLIP (``clip_model``/``clip_pretrained``); ``tta``: views whose
    unit image embeddings are averaged before the search (:mod:`.clip_views`)."""

    label, bank_param = "knn", "index"

    def __init__(self, index: str | None = None, clip_model: str = "ViT-H-14",
                 clip_pretrained: str | None = "laion2b_s32b_b79k", k: int = 10, temperature: float = 0.05,
                 device: str | None = None, tta: list | None = None) -> None:
        super().__init__(index, clip_model, clip_pretrained, device, tta, k=k, temperature=temperature)
        if int(k) < 1:
            raise ConfigError(f"knn: k must be >= 1, got {k}")
        if float(temperature) <= 0:
            raise ConfigError(f"knn: temperature must be > 0, got {temperature}")
        self.k, self.temperature = int(k), float(temperature)

    def setup(self) -> None:
        """Open the bank, check its key model, load CLIP."""
        self.bank = self.open_bank()

    def predict_batch(self, batch) -> Prediction:
        """CLIP image embeddings -> bank search -> weighted neighbour values."""
        self.ensure_setup()
        sims, rows = self.bank.search(self.embed(batch), self.k)
        return Prediction(weighted_neighbours(sims, rows, self.bank.values, self.temperature))
