"""Honest CV folds: images whose prompts are similar share a fold, without chaining into one giant group.

Two thresholds: near-duplicates (cosine >= ``near_duplicate``, 0.9) are merged transitively into
units that are never split; units then form groups by greedy complete linkage at ``threshold``
(0.7): a unit joins a group only when every one of its rows has cosine >= ``threshold`` to every
row already in the group. So two rows of a group lie within ``threshold`` of each other unless a
chain of near-duplicates joins them, and no chain of merely similar prompts (the percolation that
makes one group swallow most images at 100k+) links groups. Pairs come from exact FAISS range
searches; what the grouping splits is reported (:class:`PromptGroups`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from promptblend.errors import ConfigError

log = logging.getLogger(__name__)

#: Prompt cosine at or above which two images are near-duplicates: always in one group (and fold).
NEAR_DUPLICATE = 0.9


def similar_pairs(truth: np.ndarray, threshold: float, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, cos)`` for every pair ``i < j`` of rows with ``cos(y_i, y_j) >= threshold``.

    Exact FAISS inner-product range searches over the L2-normalised rows, each chunk of rows
    against itself and the rows after it (half the products of a full search).
    """
    import faiss

    y = np.ascontiguousarray(truth, dtype=np.float32)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    n = y.shape[0]
    # FAISS keeps inner products strictly above the radius; step just below it to keep ">=".
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    rows, cols, sims = [], [], []
    for start in range(0, n, chunk):
        index = faiss.IndexFlatIP(y.shape[1])
        index.add(y[start:])
        lims, dist, labels = index.range_search(y[start : start + chunk], radius)
        counts = np.diff(lims).astype(np.int64)
        r = np.repeat(np.arange(start, start + counts.size), counts)
        c = labels.astype(np.int64) + start
        keep = r < c
        rows.append(r[keep])
        cols.append(c[keep])
        sims.append(dist[keep])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label per row of the graph with edges ``(i, j)``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _complete_links(units: np.ndarray, i: np.ndarray, j: np.ndarray, sims: np.ndarray):
    """Unit pairs ``(u, v, mean cos)`` with every row pair between them above the threshold (u != v)."""
    size = np.bincount(units)
    u, v = units[i], units[j]
    cross = u != v
    u, v, s = np.minimum(u, v)[cross], np.maximum(u, v)[cross], sims[cross].astype(np.float64)
    key = u * size.size + v
    uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    total = np.bincount(inverse, weights=s)
    uu, vv = uniq // size.size, uniq % size.size
    full = count == size[uu] * size[vv]
    return uu[full], vv[full], (total / count)[full]


def _greedy_cliques(n_units: int, size: np.ndarray, u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Group per unit: leaders in order of most rows completely linked to them, each group grown
    with the leader's neighbours (closest first) that are completely linked to every member."""
    a = np.r_[u, v]
    b = np.r_[v, u]
    w = np.r_[s, s]
    order = np.lexsort((-w, a))  # by unit, then closest neighbour first
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(n_units + 1))
    reach = np.bincount(a, weights=size[b], minlength=n_units)
    group = np.full(n_units, -1, np.int64)
    g = 0
    for leader in np.lexsort((np.arange(n_units), -reach)):
        if group[leader] >= 0:
            continue
        group[leader] = g
        nbrs = b[starts[leader] : starts[leader + 1]]
        common = set(nbrs[group[nbrs] < 0].tolist())
        for cand in nbrs.tolist():
            if cand in common and group[cand] < 0:
                group[cand] = g
                common.intersection_update(b[starts[cand] : starts[cand + 1]].tolist())
        g += 1
    return group


@dataclass(frozen=True)
class PromptGroups:
    """Group per image and the similar pairs that made them (``i < j``, cosine ``sims``)."""

    labels: np.ndarray
    threshold: float
    near_duplicate: float
    i: np.ndarray
    j: np.ndarray
    sims: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Images per group."""
        return np.bincount(self.labels)

    def split_share(self, fold_of: np.ndarray) -> dict:
        """Pairs at ``threshold <= cos < near_duplicate`` (and near-duplicates) in different folds."""
        apart = fold_of[self.i] != fold_of[self.j]
        near = self.sims >= self.near_duplicate
        similar = ~near
        return {
            "similar_pairs": int(similar.sum()),
            "similar_split": float(apart[similar].mean()) if similar.any() else 0.0,
            "near_pairs": int(near.sum()),
            "near_split": int(apart[near].sum()),
        }


def prompt_groups(truth: np.ndarray, threshold: float = 0.7, near_duplicate: float = NEAR_DUPLICATE,
                  chunk: int = 4096) -> PromptGroups:
    """Bounded prompt groups of the unit ``truth`` rows (see the module docstring), numbered 0.. by first row."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"the group threshold is a prompt cosine in (0, 1], got {threshold}")
    near_duplicate = max(near_duplicate, threshold)
    n = len(truth)
    i, j, sims = similar_pairs(truth, threshold, chunk)
    near = sims >= near_duplicate
    _, units = np.unique(_components(n, i[near], j[near]), return_inverse=True)
    size = np.bincount(units, minlength=int(units.max(initial=-1)) + 1)
    group_of_unit = _greedy_cliques(size.size, size, *_complete_links(units, i, j, sims))
    labels = group_of_unit[units] if n else np.zeros(0, np.int64)
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(first.size, np.int64)
    renumber[np.argsort(first)] = np.arange(first.size)
    return PromptGroups(renumber[labels] if n else labels, threshold, near_duplicate, i, j, sims)


def similarity_groups(truth: np.ndarray, threshold: float = 0.7, chunk: int = 4096) -> np.ndarray:
    """Group id per row (:func:`prompt_groups` labels)."""
    return prompt_groups(truth, threshold, chunk=chunk).labels


def _group_links(groups: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None, n_groups: int):
    """CSR ``(starts, neighbours)`` of the similar pairs between different groups (one entry per pair)."""
    if pairs is None or not len(pairs[0]):
        return np.zeros(n_groups + 1, np.int64), np.zeros(0, np.int64)
    a, b = groups[pairs[0]], groups[pairs[1]]
    cross = a != b
    a, b = np.r_[a[cross], b[cross]], np.r_[b[cross], a[cross]]
    order = np.argsort(a, kind="stable")
    return np.searchsorted(a[order], np.arange(n_groups + 1)), b[order]


def _depth_first(starts_order: np.ndarray, starts: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Every group once, depth first through the links, each search from the next unvisited group of
    ``starts_order``: linked groups come one after another, so a chain is not cut at every link."""
    seen = np.zeros(starts.size - 1, bool)
    order = []
    for root in starts_order.tolist():
        if seen[root]:
            continue
        stack = [root]
        while stack:
            g = stack.pop()
            if seen[g]:
                continue
            seen[g] = True
            order.append(g)
            stack.extend(x for x in nbrs[starts[g] : starts[g + 1]].tolist() if not seen[x])
    return np.asarray(order, np.int64)


def group_folds(groups: np.ndarray, k: int, seed: int = 0,
                pairs: tuple[np.ndarray, np.ndarray] | None = None, slack: float = 0.01) -> np.ndarray:
    """Fold id (0..k-1) per row; every group lies in one fold and fold sizes stay balanced.

    Without ``pairs`` groups go largest first (ties in a seeded random order) to the currently
    smallest fold. With ``pairs`` (rows ``i``, ``j`` of similar prompts, see :func:`similar_pairs`)
    they go depth first through the graph of those pairs, each to the fold holding most of its
    similar pairs, discounted by how full the fold is (linear deterministic greedy), among the folds
    it fits in under ``(1 + slack)`` times the mean size (else the smallest): similar prompts across
    groups share a fold as far as balance allows.
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
    starts, nbrs = _group_links(groups, pairs, sizes.size)
    order = _depth_first(np.lexsort((tie, -sizes)), starts, nbrs)
    cap = (1.0 + slack) * groups.size / k
    fold_of_group = np.full(sizes.size, -1, np.int64)
    fill = np.zeros(k, np.int64)
    for g in order:
        if sizes[g] == 0:
            continue
        placed = fold_of_group[nbrs[starts[g] : starts[g + 1]]]
        links = np.bincount(placed[placed >= 0], minlength=k)
        score = links * (1.0 - fill / cap)
        score[fill + sizes[g] > cap] = -np.inf
        if not np.isfinite(score).any() or score.max() <= 0:
            f = int(np.argmin(fill))
        else:
            f = int(np.argmax(score))
        fold_of_group[g] = f
        fill[f] += sizes[g]
    largest = int(sizes.max())
    if largest > groups.size / k:
        log.warning("the largest prompt group holds %d of %d images: folds are unbalanced", largest, groups.size)
    return fold_of_group[groups]
