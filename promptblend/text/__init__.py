"""The scoring text encoder (all-MiniLM-L6-v2 by default) and its backends (torch, ONNX Runtime)."""

from .encode import BACKENDS, encode
from .model import SCORING_MODEL, load_text_model, resolve_model, scoring_model_path

__all__ = ["BACKENDS", "SCORING_MODEL", "encode", "load_text_model", "resolve_model", "scoring_model_path"]
