"""The competition metric: mean cosine similarity between predicted and true prompt embeddings."""

from __future__ import annotations

import numpy as np

from promptblend.vectors import check_embeddings, l2_normalise


def cosine_rows(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two aligned N x D matrices (float64 result)."""
    pred = check_embeddings(pred, dim=np.shape(truth)[1], what="predictions")
    truth = check_embeddings(truth, n=pred.shape[0], dim=pred.shape[1], what="truth")
    return np.einsum("ij,ij->i", l2_normalise(pred).astype(np.float64), l2_normalise(truth).astype(np.float64))


def score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean cosine over images: the Kaggle score."""
    return float(cosine_rows(pred, truth).mean())
