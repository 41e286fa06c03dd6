"""The ``clip-regressor`` predictor: CLIP image embedding -> trained head -> 384-d, or a fine-tuned tower + head."""

from __future__ import annotations

from typing import Any

from ..base import Prediction
from ..training import MODEL_FILE, TrainedClipPredictor, load_weights
from .train import PRESETS


class ClipRegressorPredictor(TrainedClipPredictor):
    """Loads a folder trained by ``python -m predictors.clip_regressor.train`` (``checkpoint=``).

    A fine-tuned folder carries its whole vision tower in ``model.safetensors`` (the EMA weights when
    trained with ``--ema``); it is served batched, in fp16 on CUDA, at the input size it was trained at
    (``--image-size``). ``tta``: views (:mod:`predictors.clip_views`: resize, normalisation, flip) whose
    unit predictions are averaged.
    """

    kind = "clip-regressor"
    presets = PRESETS
    trainer = "predictors.clip_regressor.train"

    def __init__(self, tta: list | None = None, **params: Any) -> None:
        super().__init__(tta=tta, **params)
        from ..clip_views import parse_views

        self.views = parse_views(tta)
        self.image_size = (self.train_config or {}).get("train", {}).get("image_size")

    def build_head(self, clip_dim: int):
        from .model import build_head

        return build_head(clip_dim, self.arch)

    def setup(self) -> None:
        if not self.finetuned:
            return super().setup()
        import torch

        from promptblend.clip import ClipBundle
        from promptblend.device import default_device

        from .model import FinetunedRegressor, build_head, new_tower

        device = self.device or default_device()
        visual, preprocess = new_tower(self.clip[0], None, self.image_size)  # the folder holds every tower weight
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model = FinetunedRegressor(visual, build_head(visual.output_dim, self.arch, dropout=0.0))
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

    def transform(self):
        """The served CLIP transform with the ``tta`` views (light, picklable)."""
        from ..clip_views import views_transform

        return views_transform(super().transform(), self.views)

    def predict_batch(self, batch) -> Prediction:
        import torch

        from ..clip_views import average_views

        self.ensure_setup()
        with torch.inference_mode():
            return Prediction(average_views(lambda x: self._embed(x).float().cpu().numpy(), batch))
