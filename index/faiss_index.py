"""Build a FAISS index from a chosen factory key, measure recall@k against exact search and tune
its search parameter (nprobe / efSearch) to a recall target."""

from __future__ import annotations

import logging
import time

import numpy as np

from promptblend.bank import set_search_param
from promptblend.vectors import check_embeddings

from .choose import MIN_POINTS_PER_LIST, REFINE_K_FACTOR, IndexChoice

log = logging.getLogger(__name__)

SEARCH_GRID = {
    "nprobe": [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024],
    "efSearch": [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024],
}
ADD_CHUNK = 65536
#: Recall gains below this over three grid steps count as a plateau.
PLATEAU = 0.002


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(keys: np.ndarray, choice: IndexChoice, seed: int = 0, kmeans_iters: int = 10,
                progress: bool = True):
    """Train (on a seeded sample) and fill a ``choice.key`` inner-product index over ``keys``."""
    import faiss
    from promptblend.progress import progress_bar

    n, dim = keys.shape
    index = faiss.index_factory(dim, choice.key, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = kmeans_iters
        ivf.cp.seed = seed
        sample_n = min(n, ivf.nlist * (MIN_POINTS_PER_LIST + 1))
        rows = np.sort(np.random.default_rng(seed).choice(n, sample_n, replace=False))
        t = time.perf_counter()
        index.train(_f32(keys[rows]))
        log.info("trained %s on %d vectors in %.1f s", choice.key, sample_n, time.perf_counter() - t)
    if hasattr(faiss.downcast_index(index), "hnsw"):
        faiss.downcast_index(index).hnsw.efConstruction = 80
    if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", REFINE_K_FACTOR)  # saved with it
    for start in progress_bar(range(0, n, ADD_CHUNK), desc=f"index {choice.key}", unit="chunk", disable=not progress):
        index.add(_f32(keys[start : start + ADD_CHUNK]))
    return index


def sample_queries(keys: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Realistic held-out-like queries: normalised 0.7/0.3 mixtures of two random bank keys."""
    rng = np.random.default_rng(seed)
    a = _f32(keys[np.sort(rng.integers(0, len(keys), n))])
    b = _f32(keys[np.sort(rng.integers(0, len(keys), n))])
    q = 0.7 * a + 0.3 * rng.permutation(b)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_search(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over ``keys`` (streamed in blocks, so ``keys`` may be a memmap)."""
    import faiss

    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    q = _f32(queries)
    for start in range(0, len(keys), 262144):
        block = _f32(keys[start : start + 262144])
        d, i = faiss.knn(q, block, k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(D=d, I=np.where(i >= 0, i + start, -1))
    heap.finalize()
    return heap.D, heap.I


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0], assume_unique=True)) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def _pick(curve: list[list], target: float, margin: float) -> list:
    """First point reaching target + margin, else the first reaching target, else the first on the plateau."""
    for bar in (target + margin, target):
        hit = next((c for c in curve if c[1] >= bar), None)
        if hit is not None:
            return hit
    top = max(c[1] for c in curve)
    return next(c for c in curve if c[1] >= top - PLATEAU)


def tune_search(index, choice: IndexChoice, keys: np.ndarray, target: float = 0.95, k: int = 10,
                n_queries: int = 1000, seed: int = 1, margin: float = 0.02,
                queries: np.ndarray | None = None) -> dict:
    """Smallest search parameter whose recall@k on sampled queries reaches ``target + margin``
    (else ``target``, else the start of the recall plateau).

    ``queries`` (unit rows of the keys' dimension) replaces the sampled mixtures of bank keys with
    real queries, e.g. the CLIP image embeddings a ``knn`` predictor will search with.

    The margin covers queries harder than the sampled ones (1.9M mixtures of 2,996 real vectors:
    sample 0.957 vs held-out 0.938 without it). How far the sample is from real queries depends on
    the bank: over mixtures of 99,817 real vectors the held-out queries were the easier ones.

    Returns ``{"param", "value", "recall", "reached", "curve": [[value, recall, qps], ...]}``;
    ``reached`` is false when no value reaches ``target``.
    """
    if queries is None:
        queries = sample_queries(keys, min(n_queries, len(keys)), seed)
    queries = check_embeddings(_f32(queries), dim=keys.shape[1], what="tuning queries")
    _, truth = exact_search(keys, queries, k)
    if choice.search_param is None:
        _, found = index.search(queries, k)
        return {"param": None, "value": None, "recall": recall_at_k(found, truth), "reached": True, "curve": []}
    grid = SEARCH_GRID[choice.search_param]
    if choice.search_param == "nprobe":
        import faiss

        grid = [v for v in grid if v <= faiss.extract_index_ivf(index).nlist]
    curve = []
    for value in grid:
        set_search_param(index, choice.search_param, value)
        t = time.perf_counter()
        _, found = index.search(queries, k)
        qps = len(queries) / max(time.perf_counter() - t, 1e-9)
        r = recall_at_k(found, truth)
        curve.append([value, round(r, 5), round(qps, 1)])
        log.info("%s=%d recall@%d=%.4f (%.0f q/s)", choice.search_param, value, k, r, qps)
        if r >= target + margin or (len(curve) > 3 and r - curve[-4][1] < PLATEAU):
            break  # good enough, or recall stopped growing (the codes' quantisation ceiling)
    best = _pick(curve, target, margin)
    if best[1] < target:
        log.warning("%s: recall@%d %.4f < target %.2f at best %s", choice.key, k, best[1], target, choice.search_param)
    set_search_param(index, choice.search_param, best[0])
    return {"param": choice.search_param, "value": best[0], "recall": best[1], "reached": best[1] >= target,
            "margin": margin, "k": k, "queries": len(queries), "curve": curve}


def write_index(index, path, needed: int | None = None) -> None:
    """Write a FAISS index atomically, through Python's file writes so a full disk is a named
    :class:`~promptblend.errors.DiskFullError` (``needed``: expected bytes, checked first)."""
    import faiss

    from promptblend import atomic

    with atomic.atomic_path(path, ".faiss", needed=needed) as tmp, open(tmp, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))
