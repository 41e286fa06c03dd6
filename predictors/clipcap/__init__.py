"""clipcap: frozen CLIP image embedding -> mapping transformer -> prefix tokens -> GPT-2 captioner."""

from .train import PRESETS, train_clipcap

__all__ = ["PRESETS", "train_clipcap"]
