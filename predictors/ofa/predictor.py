"""The ``ofa`` predictor: OFA (an OFA-Sys checkpoint folder or hub id) asked the seed's query -> caption -> MiniLM."""

from __future__ import annotations

from typing import Any

from promptblend.errors import ConfigError

from ..base import Prediction, Predictor


class OFACaptioner(Predictor):
    """Caption each image with OFA (batched beam search; float16 on CUDA), embed the caption with MiniLM."""

    produces_text = True

    def __init__(
        self,
        model: str = "OFA-Sys/ofa-large-caption",
        query: str = " what does the image describe?",
        resolution: int | None = None,
        num_beams: int = 5,
        no_repeat_ngram_size: int = 3,
        max_new_tokens: int = 16,
    ) -> None:
        super().__init__(model=model, query=query, resolution=resolution, num_beams=num_beams,
                         no_repeat_ngram_size=no_repeat_ngram_size, max_new_tokens=max_new_tokens)
        self.bundle: Any = None

    def setup(self) -> None:
        """Load the OFA checkpoint and the scoring text encoder."""
        from promptblend.text import load_text_model

        from .load import load_ofa

        self.bundle = load_ofa(self.params["model"], self.device)
        if self.resolution is None:
            raise ConfigError(f"OFA checkpoint '{self.params['model']}' does not name its image size "
                              "(no patch_image_size, not a released width): set resolution=")
        load_text_model()

    @property
    def resolution(self) -> int | None:
        """The configured image side, else the checkpoint's."""
        return self.params["resolution"] or (self.bundle.resolution if self.bundle is not None else None)

    def transform(self) -> Any:
        """Image -> OFA's pixels (picklable, no model)."""
        from .load import OFAPixels

        return OFAPixels(self.resolution)

    def preprocess(self, image) -> Any:
        """Image -> OFA's pixels."""
        return self.transform()(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack pixel values."""
        import torch

        return torch.stack(items)

    def caption(self, pixel_values) -> list[str]:
        """Captions of a stacked batch with the configured query and decoding."""
        p = self.params
        tokens = self.bundle.generate(pixel_values, p["query"], p["num_beams"], p["no_repeat_ngram_size"],
                                      p["max_new_tokens"])
        return self.bundle.decode(tokens)

    def predict_batch(self, batch: Any) -> Prediction:
        """Caption, then embed the captions."""
        from promptblend.text import encode

        captions = self.caption(batch)
        return Prediction(encode(captions, show_progress=False), captions)
