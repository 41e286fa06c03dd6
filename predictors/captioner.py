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

from .base import Prediction, Predictor
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
        return self.processor.image_processor(image, return_tensors="pt")["pixel_values"][0]

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


@functools.lru_cache(maxsize=2)
def load_caption_model(name_or_path: str, device: str | None = None, seed: int = 0) -> CaptionModel:
    """Load (once per process) an image-to-text model by hub id or local folder; ``pb-tiny-blip`` is built.

    Missing local paths and hub ids that cannot be resolved offline raise :class:`ModelNotFoundError`.
    On CUDA the weights are float16.
    """
    import torch

    device = resolve_device(device)
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
        self.captioner: CaptionModel | None = None

    def setup(self) -> None:
        """Load the caption model and the scoring text encoder."""
        from promptblend.text import load_text_model

        self.captioner = load_caption_model(self.params["model"], self.device, self.params["seed"])
        load_text_model()

    def preprocess(self, image) -> Any:
        """Image -> the caption model's pixel values."""
        return self.captioner.pixels(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack pixel values."""
        import torch

        return torch.stack(items)

    def caption(self, pixel_values) -> list[str]:
        """Captions of a stacked batch with the configured query and generation settings."""
        p = self.params
        return self.captioner.generate(
            pixel_values, p["query"], p["num_beams"], p["max_new_tokens"], p["min_new_tokens"]
        )

    def predict_batch(self, batch: Any) -> Prediction:
        """Caption, then embed the captions."""
        from promptblend.text import encode

        captions = self.caption(batch)
        return Prediction(encode(captions, show_progress=False), captions)
