"""Checks and helpers for prompt-embedding matrices (N x 384 float32)."""

from __future__ import annotations

import numpy as np

from .errors import AlignmentError, EmbeddingError

DIM = 384


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def check_embeddings(emb: np.ndarray, n: int | None = None, dim: int = DIM, what: str = "embeddings") -> np.ndarray:
    """Return ``emb`` as float32 after checking it is 2-d, ``n`` x ``dim`` and finite."""
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise EmbeddingError(f"{what} must be 2-d (N x {dim}), got shape {emb.shape}")
    if emb.shape[1] != dim:
        raise EmbeddingError(f"{what} must have {dim} columns, got {emb.shape[1]}")
    if n is not None and emb.shape[0] != n:
        raise AlignmentError(f"{what} has {emb.shape[0]} rows but there are {n} ids")
    if not np.issubdtype(emb.dtype, np.floating):
        raise EmbeddingError(f"{what} must be floating point, got {emb.dtype}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise EmbeddingError(f"{what} has NaN/inf in {rows.size} rows, e.g. rows {rows[:5].tolist()}")
    return emb.astype(np.float32, copy=False)


def check_ids(ids: list[str], what: str = "ids") -> list[str]:
    """Return ids as a list of str after checking none is empty or repeated."""
    ids = [str(i) for i in ids]
    if any(not i or i != i.strip() or "\n" in i for i in ids):
        raise AlignmentError(f"{what} holds an empty id or one with whitespace")
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        raise AlignmentError(f"{what} repeats ids, e.g. {dup[:3]}")
    return ids
