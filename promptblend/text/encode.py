"""One :func:`encode` for every caller: the scoring text model through one of its backends."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from promptblend.errors import EmbeddingError
from promptblend.vectors import l2_normalise

from .model import load_text_model, resolve_model


def _encode_torch(items: list[str], model: str | None, batch_size: int, progress: bool, normalize: bool) -> np.ndarray:
    """sentence-transformers itself (the scoring path)."""
    st = load_text_model(model)
    dim = (getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)()
    if not items:
        return np.zeros((0, dim), np.float32)
    return st.encode(
        items,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    ).astype(np.float32, copy=False)


def _encode_onnx(items: list[str], model: str | None, batch_size: int, progress: bool, normalize: bool) -> np.ndarray:
    """The same weights exported to ONNX Runtime fp32, length-bucketed batches (bank embedding)."""
    from .onnx import load_onnx_encoder

    out = load_onnx_encoder(resolve_model(model)).encode(items, batch_size, progress)
    return l2_normalise(out) if normalize else out


#: ``torch``: sentence-transformers itself. ``onnx``: the same weights exported to ONNX Runtime fp32
#: with fused BERT kernels, token-length-bucketed batches (same vectors to cosine >= 0.99999, 2-3x
#: faster on CPU). ``auto`` picks one of them (:func:`resolve_backend`).
BACKENDS = {"torch": _encode_torch, "onnx": _encode_onnx}

#: Environment variable that fixes what ``auto`` means (``torch`` or ``onnx``) for every caller.
BACKEND_ENV = "PROMPTBLEND_TEXT_BACKEND"


def resolve_backend(name: str = "auto", model: str | None = None) -> str:
    """``auto`` -> $PROMPTBLEND_TEXT_BACKEND if set, else ``torch`` on CUDA (sentence-transformers on
    the GPU) or for a model other than the scoring model, and ``onnx`` (its exact fp32 export) on CPU;
    other names are checked and kept."""
    if name == "auto":
        import os

        name = os.environ.get(BACKEND_ENV) or None
        if name is None:
            from promptblend.device import default_device

            scoring = resolve_model(model) == resolve_model(None)
            name = "onnx" if scoring and default_device() != "cuda" else "torch"
    if name not in BACKENDS:
        raise EmbeddingError(f"unknown encode backend '{name}'; use auto or one of {', '.join(BACKENDS)}")
    return name


def encode(
    texts: str | Sequence[str],
    model: str | None = None,
    batch_size: int = 64,
    show_progress: bool | None = None,
    normalize: bool = True,
    backend: str = "auto",
) -> np.ndarray:
    """Embed texts as float32 rows (L2-normalised by default), batched, in input order.

    One string gives shape ``(dim,)``; a list gives ``(len(texts), dim)``. A progress bar shows
    for more than a few batches unless ``show_progress`` says otherwise. ``backend``: ``auto``
    (:func:`resolve_backend`: the ONNX export on CPU, cached under ``cache_dir()/onnx``), ``onnx``
    or ``torch``.
    """
    backend = resolve_backend(backend, model)
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    if show_progress is None:
        show_progress = len(items) > 8 * batch_size
    out = BACKENDS[backend](items, model, batch_size, show_progress, normalize)
    return out[0] if single else out
