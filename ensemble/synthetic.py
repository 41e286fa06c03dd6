"""Synthetic truth and runs with known structure, for tests, benchmarks and smoke runs of the tuner.

Truth rows share a common direction (like real prompt embeddings) and come in clusters of similar
prompts; each run is the truth plus run-specific and shared noise at its own quality, with a
per-image scale so that per-run normalisation matters.
"""

from __future__ import annotations

import numpy as np

from promptblend.runs import Run
from promptblend.vectors import DIM, l2_normalise


def synthetic_truth(n: int, seed: int = 0, cluster_size: float = 3.0) -> np.ndarray:
    """Unit N x 384 float32 truth rows in clusters of about ``cluster_size`` similar prompts."""
    rng = np.random.default_rng(seed)
    common = l2_normalise(rng.normal(size=(1, DIM)))[0]
    n_clusters = max(1, int(round(n / cluster_size)))
    centres = l2_normalise(rng.normal(size=(n_clusters, DIM)))
    which = rng.integers(0, n_clusters, size=n)
    y = 0.6 * common + centres[which] + 0.45 * l2_normalise(rng.normal(size=(n, DIM)))
    return l2_normalise(y)


def synthetic_runs(truth: np.ndarray, k: int, seed: int = 0, ids: list[str] | None = None) -> list[Run]:
    """``k`` runs of decreasing quality over ``truth`` (named ``run0``..), float32, unnormalised rows."""
    rng = np.random.default_rng(seed + 1)
    n = len(truth)
    ids = ids or [f"img{i:06d}" for i in range(n)]
    shared = l2_normalise(rng.normal(size=(n, DIM)))
    runs = []
    for j in range(k):
        noise = l2_normalise(rng.normal(size=(n, DIM)))
        signal = 1.0 / (1.0 + 0.35 * j)
        rows = signal * truth + 0.8 * noise + 0.4 * shared
        scale = rng.lognormal(0.0, 0.5, size=(n, 1)) * (1 + j)
        runs.append(Run(ids, (l2_normalise(rows) * scale).astype(np.float32), {"name": f"run{j}"}))
    return runs


def synthetic_problem(n: int, k: int, seed: int = 0) -> tuple[list[Run], Run]:
    """``k`` synthetic runs and their truth run on ``n`` images."""
    y = synthetic_truth(n, seed)
    runs = synthetic_runs(y, k, seed)
    return runs, Run(runs[0].ids, y, {"name": "truth"})
