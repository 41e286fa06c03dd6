"""The one small base class every predictor implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from PIL import Image


@dataclass
class Prediction:
    """A batch's output: float32 (B, 384) unit rows, and the generated text for captioners."""

    embeddings: np.ndarray
    prompts: list[str] | None = None


class Predictor:
    """Images in, prompt embeddings out.

    Subclasses take their config entries as keyword arguments, build heavy models in
    :meth:`setup` (called once, lazily, in the process that predicts), turn one decoded image into
    a model input in :meth:`preprocess` (runs in DataLoader workers) and predict a batch of those
    inputs in :meth:`predict_batch`.
    """

    #: Whether :meth:`predict_batch` also returns prompt text.
    produces_text: ClassVar[bool] = False
    #: False for predictors that never look at pixels: the runner then feeds row indices, not images.
    reads_pixels: ClassVar[bool] = True
    #: Device the runner asks for (``cpu``, ``cuda``, ``cuda:1``); None = CUDA when available.
    device: str | None = None

    def __init__(self, **params: Any) -> None:
        self.params = params
        self._ready = False

    def setup(self) -> None:
        """Load models and other heavy state; default: nothing."""

    def ensure_setup(self) -> None:
        """Call :meth:`setup` once."""
        if not self._ready:
            self.setup()
            self._ready = True

    def prepare(self, image_set: Any) -> None:
        """Called by the runner with the :class:`~promptblend.images.ImageSet` before predicting."""

    def cache_inputs(self) -> dict[str, Any]:
        """Digests of inputs the config names only by path (a source file, an index), for the cache key."""
        return {}

    def preprocess(self, image: Image.Image) -> Any:
        """One RGB image -> one model input (picklable); default: the image itself."""
        return image

    def collate(self, items: list[Any]) -> Any:
        """Inputs -> a batch; default: the list (tensors are stacked by subclasses that want it)."""
        return items

    def predict_batch(self, batch: Any) -> Prediction:
        """Predict one collated batch."""
        raise NotImplementedError

    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Convenience: predict decoded images in one batch, return float32 (N, 384)."""
        self.ensure_setup()
        return self.predict_batch(self.collate([self.preprocess(im) for im in images])).embeddings
