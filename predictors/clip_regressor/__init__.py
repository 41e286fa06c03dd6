"""clip-regressor: a frozen CLIP image embedding -> small MLP head -> 384-d MiniLM prompt space."""

from .trainer import PRESETS, train_regressor

__all__ = ["PRESETS", "train_regressor"]
