"""The ``clip-regressor`` predictor: CLIP image embedding -> trained head -> 384-d, or a fine-tuned tower + head."""

from __future__ import annotations

from typing import Any

from ..base import Prediction
from ..training import MODEL_FILE, TrainedClipPredictor, load_weights
from .train import PRESETS


class ClipRegressorPredictor(TrainedClipPredictor):
    """Loads a folder trained by ``python -m predictors.clip_regressor.train`` (``checkpoint=``).

    A fine-tuned folder carries its whole vision tower in ``model.safetensors`` (the EMA weights when
    trained with ``--ema``); it is served batched, in fp16 on CUDA. ``flip_tta``: average the
    predictions of each image and its mirror image (then renormalise).
    """

    kind = "clip-regressor"
    presets = PRESETS
    trainer = "predictors.clip_regressor.train"

    def __init__(self, flip_tta: bool = False, **params: Any) -> None:
        super().__init__(flip_tta=flip_tta, **params)
        self.flip_tta = bool(flip_tta)

    def build_head(self, clip_dim: int):
        from .model import RegressorHead

        return RegressorHead(clip_dim, hidden=self.arch["hidden"], dropout=self.arch["dropout"])

    def setup(self) -> None:
        if not self.finetuned:
            return super().setup()
        import torch

        from promptblend.clip import ClipBundle
        from promptblend.device import default_device

        from .model import FinetunedRegressor, RegressorHead, new_tower

        device = self.device or default_device()
        visual, preprocess = new_tower(self.clip[0], None)  # the folder holds every tower weight
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model = FinetunedRegressor(visual, RegressorHead(visual.output_dim, self.arch["hidden"], 0.0))
        if self.checkpoint is not None:
            load_weights(self.model, self.checkpoint / MODEL_FILE)
        self.model.to(device).eval()
        if device.startswith("cuda"):
            self.model.half()
        self.bundle = ClipBundle(None, preprocess, None, self.clip[0], None, device)

    def _embed(self, pixels):
        """Unit 384-d predictions of a pixel batch (a tensor on the model's device)."""
        if not self.finetuned:
            return self.head(self.clip_features(pixels))
        param = next(self.model.parameters())
        return self.model(pixels.to(param.device, param.dtype)).float()

    def predict_batch(self, batch) -> Prediction:
        import torch

        self.ensure_setup()
        with torch.inference_mode():
            emb = self._embed(batch)
            if self.flip_tta:
                emb = torch.nn.functional.normalize(emb + self._embed(torch.flip(batch, dims=[-1])), dim=-1)
        return Prediction(emb.float().cpu().numpy())
