"""The scoring text encoder (all-MiniLM-L6-v2 by default) and its backends (torch, ONNX Runtime)."""

from .encode import BACKEND_ENV, BACKENDS, encode, resolve_backend
from .model import SCORING_MODEL, load_text_model, resolve_model, scoring_model_path

__all__ = [
    "BACKEND_ENV", "BACKENDS", "SCORING_MODEL", "encode", "load_text_model", "resolve_backend", "resolve_model",
    "scoring_model_path",
]
