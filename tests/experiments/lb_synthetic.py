"""Constructed truths and predictions with exactly known per-image scores, for leaderboard tests."""

from __future__ import annotations

import numpy as np

from promptblend.runs import Run


def unit_rows(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    """``n`` random unit rows."""
    x = rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def with_cosines(truth: np.ndarray, cos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Predictions whose cosine with each truth row is exactly ``cos[i]`` (float32)."""
    z = rng.normal(size=truth.shape)
    z -= (z * truth).sum(axis=1, keepdims=True) * truth
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    c = np.clip(cos, -1, 1)[:, None]
    return (c * truth + np.sqrt(1 - c * c) * z).astype(np.float32)


def truth_run(n: int, seed: int = 0, prefix: str = "img") -> Run:
    """A truth run over ``n`` ids with random unit embeddings."""
    rng = np.random.default_rng(seed)
    return Run([f"{prefix}{i:05d}" for i in range(n)], unit_rows(rng, n).astype(np.float32), {"name": "truth"})


def graded_scores(n: int, k: int, gap: float, seed: int = 0, spread: float = 0.15) -> np.ndarray:
    """Per-image scores of ``k`` entries whose true means fall by ``gap`` per place (entry 0 best).

    Images share a difficulty (as real ones do), plus independent per-entry noise of sd ``spread``.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.35, 0.85, n)
    return np.clip(base[None, :] - gap * np.arange(k)[:, None] + rng.normal(0, spread, (k, n)), -1, 1)


def entry_cosines(n: int, seed: int, mean: float) -> np.ndarray:
    """Per-image cosines of one entry: a difficulty shared by all entries plus the entry's own noise."""
    base = np.random.default_rng(0).uniform(0.3, 0.9, n)
    return np.clip(base - 0.6 + mean + np.random.default_rng(seed).normal(0, 0.1, n), -1, 1)
