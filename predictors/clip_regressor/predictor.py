"""The ``clip-regressor`` predictor: CLIP image embedding -> trained head -> 384-d."""

from __future__ import annotations

from ..base import Prediction
from ..training import TrainedClipPredictor
from .trainer import PRESETS


class ClipRegressorPredictor(TrainedClipPredictor):
    """Loads a folder trained by ``python -m predictors.clip_regressor.train`` (``checkpoint=``)."""

    kind = "clip-regressor"
    presets = PRESETS
    trainer = "predictors.clip_regressor.train"

    def build_head(self, clip_dim: int):
        from .model import RegressorHead

        return RegressorHead(clip_dim, hidden=self.arch["hidden"], dropout=self.arch["dropout"])

    def predict_batch(self, batch) -> Prediction:
        import torch

        self.ensure_setup()
        with torch.inference_mode():
            emb = self.head(self.clip_features(batch)).float().cpu().numpy()
        return Prediction(emb)
