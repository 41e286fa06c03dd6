"""Greedy near-duplicate removal: a prompt is dropped when an earlier kept prompt has cosine >= T."""

from __future__ import annotations

import numpy as np

#: Above this many vectors the kept set is searched with HNSW (approximate) instead of exactly.
EXACT_MAX = 200_000
CHUNK = 4096


def near_duplicates(values: np.ndarray, threshold: float, progress: bool = True) -> np.ndarray:
    """Boolean keep-mask over unit rows ``values`` (first occurrence wins), found with FAISS."""
    import faiss
    from promptblend.progress import progress_bar

    n, dim = values.shape
    kept = faiss.IndexFlatIP(dim) if n <= EXACT_MAX else faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    keep = np.zeros(n, bool)
    for start in progress_bar(range(0, n, CHUNK), desc=f"near-dedup cos>={threshold}", unit="chunk", disable=not progress):
        x = np.ascontiguousarray(values[start : start + CHUNK], dtype=np.float32)
        dup = np.zeros(len(x), bool)
        if kept.ntotal:
            d, _ = kept.search(x, 1)
            dup = d[:, 0] >= threshold
        close = (x @ x.T) >= threshold
        np.fill_diagonal(close, False)
        for i in range(len(x)):
            if not dup[i]:
                dup[i + 1 :] |= close[i, i + 1 :]
        keep[start : start + len(x)] = ~dup
        kept.add(x[~dup])
    return keep
