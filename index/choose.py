"""Index choice as a pure function of (vector count, dimension, memory budget), autofaiss style.

Candidates are ranked by quality: exact ``Flat`` for small banks, ``HNSW32`` while it builds fast
and fits, then IVF over 4-bit fast-scan PQ codes (SIMD scanning) whose top ``k * REFINE_K_FACTOR``
candidates are re-ranked with exact (``RFlat``), half-precision (``Refine(SQfp16)``) or 8-bit
(``Refine(SQ8)``) vectors, then ``IVF{n},SQ8`` and ``OPQ{m},IVF{n},PQ{m}x8`` as compression is needed.
``benchmarks/bench_index_scale.py`` (``--key`` to compare another index) prints recall and speed
per nprobe on 1.9M vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from promptblend.errors import BankError

#: Up to this many vectors exact search is fast enough (and needs no training).
FLAT_MAX = 50_000
#: HNSW graphs build in minutes on a few cores up to about this size.
HNSW_MAX = 500_000
HNSW_M = 32
#: k-means needs about this many training vectors per IVF list.
MIN_POINTS_PER_LIST = 39
#: Fewer PQ bytes per vector than this lose too much recall to be worth building.
MIN_PQ_BYTES = 8
#: Re-ranked candidates per result of the fast-scan indexes (with 2 dims per 4-bit sub-quantiser,
#: 8 brings recall to that of searching the re-ranking codes alone: compare ``IVF,SQfp16``).
REFINE_K_FACTOR = 8


@dataclass(frozen=True)
class IndexChoice:
    """A faiss factory key, its estimated memory and the search parameter to tune (or None)."""

    key: str
    bytes: int
    search_param: str | None

    @property
    def gib(self) -> float:
        """Estimated memory in GiB."""
        return self.bytes / 2**30


def ivf_lists(count: int) -> int:
    """Number of IVF lists: the power of two nearest ``4 * sqrt(count)``, within [256, 65536]."""
    target = 4 * math.sqrt(max(count, 1))
    return int(min(65536, max(256, 2 ** round(math.log2(target)))))


def pq_subquantizers(dim: int, count: int, budget_bytes: int, overhead: int) -> int | None:
    """Largest ``m`` (dividing ``dim``, at most ``dim / 2``) whose 1-byte PQ codes fit the budget."""
    for m in sorted((m for m in range(MIN_PQ_BYTES, dim // 2 + 1, 4) if dim % m == 0), reverse=True):
        if count * (m + 8) + overhead <= budget_bytes:
            return m
    return None


def index_candidates(count: int, dim: int, budget_bytes: int) -> list[IndexChoice]:
    """Every index that fits ``budget_bytes``, best first (empty if none fits)."""
    if count <= 0 or dim <= 0:
        raise BankError(f"cannot index {count} vectors of dimension {dim}")
    flat = count * dim * 4
    out: list[IndexChoice] = []
    if count <= FLAT_MAX and flat <= budget_bytes:
        return [IndexChoice("Flat", flat, None)]
    hnsw = int(count * (dim * 4 + HNSW_M * 2 * 4 * 1.1))
    if count <= HNSW_MAX and hnsw <= budget_bytes:
        out.append(IndexChoice(f"HNSW{HNSW_M}", hnsw, "efSearch"))
    nlist = ivf_lists(count)
    if count < MIN_POINTS_PER_LIST * nlist:  # too few vectors to train IVF centroids
        return out
    centroids = nlist * dim * 4
    ivf = []
    if dim % 2 == 0:  # 4-bit fast-scan PQ over pairs of dimensions, re-ranked on stored vectors
        fast, codes = f"IVF{nlist},PQ{dim // 2}x4fs", dim // 4 + 8
        ivf += [(f"{fast},RFlat", codes + dim * 4), (f"{fast},Refine(SQfp16)", codes + dim * 2),
                (f"{fast},Refine(SQ8)", codes + dim)]
    ivf.append((f"IVF{nlist},SQ8", dim + 8))
    for key, per_vector in ivf:
        size = count * per_vector + centroids
        if size <= budget_bytes:
            out.append(IndexChoice(key, size, "nprobe"))
    overhead = centroids + 256 * dim * 4 + dim * dim * 4
    m = pq_subquantizers(dim, count, budget_bytes, overhead)
    if m is not None:
        out.append(IndexChoice(f"OPQ{m},IVF{nlist},PQ{m}x8", count * (m + 8) + overhead, "nprobe"))
    return out


def choose_index(count: int, dim: int, budget_bytes: int) -> IndexChoice:
    """The best index for ``count`` vectors of ``dim`` within ``budget_bytes``; raises if none fits."""
    ranked = index_candidates(count, dim, budget_bytes)
    if not ranked:
        raise BankError(
            f"no index fits {count:,} x {dim} vectors in {budget_bytes / 2**30:.2f} GiB "
            f"(even PQ codes need ~{count * 12 / 2**30:.2f} GiB); raise --budget-gb"
        )
    return ranked[0]
