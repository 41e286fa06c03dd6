"""clip-regressor: CLIP image embedding -> MLP head -> 384-d MiniLM prompt space (frozen tower, or fine-tuned end to end)."""

from .train import PRESETS, train_regressor

__all__ = ["PRESETS", "train_regressor"]
