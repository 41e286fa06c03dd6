"""The one small base class every predictor implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
    #: Config keys whose local paths :meth:`cache_inputs` does not digest: caches (not inputs) and
    #: inputs a subclass keys its own way (a bank by its manifest).
    unhashed_paths: ClassVar[tuple[str, ...]] = ()

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
        """Called by the runner with the :class:`~promptblend.imagesets.ImageSet` before predicting."""

    def cache_inputs(self) -> dict[str, Any]:
        """Content identity of what the config names only by path, for the runner's cache key: by default
        the digest of every config value that is an existing local file or folder (model weights,
        a model folder, label lists), so changed bytes make a new run."""
        return path_digests(self.params, skip=self.unhashed_paths)

    def preprocess(self, image: Image.Image) -> Any:
        """One RGB image -> one model input (picklable); default: the image itself."""
        return image

    def transform(self) -> Callable[[Image.Image], Any]:
        """The light, picklable image -> input step DataLoader workers run instead of the predictor (asked after
        setup); default: :meth:`preprocess`, which carries the predictor along: override where it holds models."""
        return self.preprocess

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


def path_digests(params: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, str]:
    """``{key: content sha256}`` of the string values of ``params`` that name existing local paths."""
    from promptblend.digest import path_digest

    return {
        k: path_digest(Path(v).expanduser())
        for k, v in sorted(params.items())
        if k not in skip and isinstance(v, str) and v and Path(v).expanduser().exists()
    }
