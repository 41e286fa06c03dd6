"""``captioner``: any transformers image-to-text model (BLIP, GIT, BLIP-2...) -> caption -> MiniLM.

Models load by hub name or local folder through ``AutoModelForImageTextToText``; ``pb-tiny-blip``
builds a tiny random BLIP offline. An optional text ``query`` conditions generation (BLIP's
"a picture of" prefix, a BLIP-2 question, the OFA seed's "What does the image describe?"); it is
cut from the front of the output when the model echoes it.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptblend.device import resolve_device
from promptblend.errors import ModelNotFoundError

from .base import Prediction, Predictor, path_digests
from .blip import TINY_BLIP, tiny_blip

log = logging.getLogger(__name__)


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id."""
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or Path(name).expanduser().exists()


@dataclass
class CaptionModel:
    """An image-to-text model with its processor, on one device."""

    model: Any
    processor: Any
    name: str
    device: str

    @property
    def dtype(self) -> Any:
        """The model's parameter dtype (float16 on CUDA)."""
        return next(self.model.parameters()).dtype

    def pixels(self, image) -> Any:
        """One RGB image -> ``pixel_values`` (3, H, W) float32 (cheap; runs in DataLoader workers)."""
        return self.transform()(image)

    def transform(self) -> ImagePixels:
        """The image processor alone, as a picklable image -> pixel values step (no model)."""
        return ImagePixels(self.processor.image_processor)

    def generate(
        self,
        pixel_values,
        query: str | None = None,
        num_beams: int = 1,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
    ) -> list[str]:
        """Captions of a (B, 3, H, W) batch, the echoed ``query`` removed."""
        import torch

        inputs: dict[str, Any] = {"pixel_values": pixel_values.to(self.device, self.dtype)}
        if query:
            text = self.processor(text=[query] * len(pixel_values), return_tensors="pt")
            inputs.update({k: v.to(self.device) for k, v in text.items() if k in ("input_ids", "attention_mask")})
        with torch.inference_mode():
            tokens = self.model.generate(
                **inputs, num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens
            )
        texts = [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        return [strip_query(t, query) for t in texts]


def strip_query(text: str, query: str | None) -> str:
    """``text`` without a leading copy of ``query`` (case-insensitive)."""
    if query and text.lower().startswith(query.lower().strip()):
        text = text[len(query.strip()) :].strip(" ,.:")
    return text


def load_caption_model(name_or_path: str, device: str | None = None, seed: int = 0) -> CaptionModel:
    """Load (once per process and content) an image-to-text model by hub id or local folder;
    ``pb-tiny-blip`` is built.

    A local folder is digested, so new weights saved into it load again. Missing local paths and
    hub ids that cannot be resolved offline raise :class:`ModelNotFoundError`. On CUDA the weights
    are float16.
    """
    from promptblend.digest import path_digest

    path = Path(name_or_path).expanduser()
    content = path_digest(path) if name_or_path != TINY_BLIP and path.exists() else None
    return _load_caption_model(name_or_path, resolve_device(device), seed, content)


@functools.lru_cache(maxsize=2)
def _load_caption_model(name_or_path: str, device: str, seed: int, content: str | None) -> CaptionModel:
    """:func:`load_caption_model`, memoised by name, device, seed and the local folder's digest ``content``."""
    import torch

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if name_or_path == TINY_BLIP:
        model, processor = tiny_blip(seed)
    else:
        if looks_like_path(name_or_path) and not Path(name_or_path).expanduser().exists():
            raise ModelNotFoundError(f"caption model path does not exist: {name_or_path}")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        source = str(Path(name_or_path).expanduser()) if looks_like_path(name_or_path) else name_or_path
        try:
            processor = AutoProcessor.from_pretrained(source)
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelNotFoundError(f"cannot load caption model '{name_or_path}' (offline or missing): {first_line}") from e
    model = model.to(device=device, dtype=dtype).eval()
    return CaptionModel(model, processor, name_or_path, device)


class ImagePixels:
    """Image -> ``pixel_values`` (3, H, W) with a transformers image processor alone: what DataLoader
    workers get instead of the caption model (picklable, no weights)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image) -> Any:
        return self.image_processor(image, return_tensors="pt")["pixel_values"][0]


class ModelCaptions:
    """A caption source: an image-to-text model (:func:`load_caption_model`) with its generation settings.

    Used by :class:`Captioner` and, as its default :class:`~predictors.interrogator.CaptionSource`,
    by the clip-interrogator predictor.
    """

    def __init__(
        self,
        model: str,
        query: str | None = None,
        num_beams: int = 1,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        seed: int = 0,
    ) -> None:
        self.name, self.query, self.seed = model, query, seed
        self.num_beams, self.max_new_tokens, self.min_new_tokens = num_beams, max_new_tokens, min_new_tokens
        self.model: CaptionModel | None = None

    def setup(self, clip: Any = None, device: str | None = None) -> None:
        """Load the model (``clip`` is unused: the captions come from pixels)."""
        self.model = load_caption_model(self.name, device, self.seed)

    def transform(self) -> ImagePixels:
        """Image -> the model's pixel values (light and picklable)."""
        return self.model.transform()

    def collate(self, items: list[Any]) -> Any:
        """Stack pixel values."""
        import torch

        return torch.stack(items)

    def captions(self, batch: Any, features: Any = None) -> list[str]:
        """Captions of stacked pixel values with the configured query and generation settings."""
        return self.model.generate(batch, self.query, self.num_beams, self.max_new_tokens, self.min_new_tokens)

    def cache_inputs(self) -> dict[str, Any]:
        """Digest of the model folder when it is a local one."""
        return path_digests({"caption_model": self.name})


class Captioner(Predictor):
    """Caption each image with an image-to-text model, embed the caption with MiniLM."""

    produces_text = True

    def __init__(
        self,
        model: str = "Salesforce/blip-image-captioning-large",
        query: str | None = None,
        num_beams: int = 1,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model=model, query=query, num_beams=num_beams, max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens, seed=seed,
        )
        self.source = ModelCaptions(model, query, num_beams, max_new_tokens, min_new_tokens, seed)

    def setup(self) -> None:
        """Load the caption model and the scoring text encoder."""
        from promptblend.text import load_text_model

        self.source.setup(None, self.device)
        load_text_model()

    def transform(self) -> ImagePixels:
        """Image -> the caption model's pixel values: the image processor alone, never the model."""
        return self.source.transform()

    def preprocess(self, image) -> Any:
        """Image -> the caption model's pixel values."""
        return self.transform()(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack pixel values."""
        return self.source.collate(items)

    def caption(self, pixel_values) -> list[str]:
        """Captions of a stacked batch with the configured query and generation settings."""
        return self.source.captions(pixel_values)

    def predict_batch(self, batch: Any) -> Prediction:
        """Caption, then embed the captions."""
        from promptblend.text import encode

        captions = self.caption(batch)
        return Prediction(encode(captions, show_progress=False), captions)
