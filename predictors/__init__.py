"""Predictors: each turns an image set into a cached run of prompt embeddings (N x 384)."""

from .base import Prediction, Predictor
from .registry import (
    add_predictor_config,
    create_predictor,
    get_predictor_config,
    list_predictors,
)

__all__ = [
    "Prediction",
    "Predictor",
    "add_predictor_config",
    "create_predictor",
    "get_predictor_config",
    "list_predictors",
]
