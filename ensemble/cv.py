"""Honest CV folds: images whose prompts are similar (cosine >= 0.7, chained) share a fold."""

from __future__ import annotations

import logging

import numpy as np

from promptblend.errors import ConfigError

log = logging.getLogger(__name__)


def similarity_groups(truth: np.ndarray, threshold: float = 0.7, chunk: int = 4096) -> np.ndarray:
    """Group id per row: connected components of the graph ``cos(y_i, y_j) >= threshold``.

    Pairs come from exact FAISS inner-product range searches over the L2-normalised rows (each
    chunk of rows against itself and the rows after it: half the products of a full search);
    components from scipy's sparse graph routine. Groups are numbered 0.. by first row.
    """
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    y = np.ascontiguousarray(truth, dtype=np.float32)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    n = y.shape[0]
    # FAISS keeps inner products strictly above the radius; step just below it to keep ">=".
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    rows, cols = [], []
    for start in range(0, n, chunk):
        # the graph is symmetric: each chunk is searched against itself and later rows only
        index = faiss.IndexFlatIP(y.shape[1])
        index.add(y[start:])
        lims, _, labels = index.range_search(y[start : start + chunk], radius)
        counts = np.diff(lims).astype(np.int64)
        rows.append(np.repeat(np.arange(start, start + counts.size), counts))
        cols.append(labels.astype(np.int64) + start)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(order.size)
    return renumber[labels]


def group_folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..k-1) per row; every group lies in one fold and fold sizes are balanced greedily.

    Groups go largest first (ties in a seeded random order) to the currently smallest fold.
    """
    groups = np.asarray(groups)
    sizes = np.bincount(groups)
    n_groups = int((sizes > 0).sum())
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k}")
    if n_groups < k:
        raise ConfigError(f"{k} folds need at least {k} prompt groups, found {n_groups}: use fewer folds")
    rng = np.random.default_rng(seed)
    tie = rng.permutation(sizes.size)
    order = np.lexsort((tie, -sizes))
    fold_of_group = np.empty(sizes.size, np.int64)
    fill = np.zeros(k, np.int64)
    for g in order:
        if sizes[g] == 0:
            continue
        f = int(np.argmin(fill))
        fold_of_group[g] = f
        fill[f] += sizes[g]
    largest = int(sizes.max())
    if largest > groups.size / k:
        log.warning("the largest prompt group holds %d of %d images: folds are unbalanced", largest, groups.size)
    return fold_of_group[groups]
