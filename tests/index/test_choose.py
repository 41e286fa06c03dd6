"""The index choice is a pure function of (count, dim, budget): boundary table and invariants."""

import pytest

from index.choose import FLAT_MAX, HNSW_MAX, choose_index, index_candidates, ivf_lists
from promptblend.errors import BankError

GiB = 2**30


@pytest.mark.parametrize(
    "count, dim, budget_gb, key",
    [
        (10, 384, 2, "Flat"),
        (FLAT_MAX, 384, 2, "Flat"),
        (FLAT_MAX + 1, 384, 2, "HNSW32"),
        (HNSW_MAX, 384, 2, "HNSW32"),
        (HNSW_MAX + 1, 384, 2, "IVF2048,PQ192x4fs,RFlat"),
        (1_900_000, 384, 8, "IVF4096,PQ192x4fs,RFlat"),
        (1_900_000, 384, 2, "IVF4096,PQ192x4fs,Refine(SQfp16)"),
        (1_900_000, 384, 1, "IVF4096,PQ192x4fs,Refine(SQ8)"),
        (1_900_000, 384, 0.7, "IVF4096,SQ8"),
        (1_900_000, 384, 0.5, "OPQ192,IVF4096,PQ192x8"),
        (1_900_000, 1024, 2, "IVF4096,SQ8"),
        (10_000_000, 384, 2, "OPQ192,IVF16384,PQ192x8"),
        (100_000, 384, 0.1, "IVF1024,PQ192x4fs,Refine(SQfp16)"),
        (1_900_000, 385, 2, "IVF4096,SQ8"),
    ],
)
def test_boundaries(count, dim, budget_gb, key):
    assert choose_index(count, dim, int(budget_gb * GiB)).key == key


@pytest.mark.parametrize("count", [2, 1_000, 50_001, 300_000, 1_900_000, 20_000_000])
@pytest.mark.parametrize("dim", [64, 384, 1024])
@pytest.mark.parametrize("budget_gb", [0.25, 2, 16])
def test_invariants(count, dim, budget_gb):
    budget = int(budget_gb * GiB)
    ranked = index_candidates(count, dim, budget)
    assert all(c.bytes <= budget for c in ranked), "every candidate fits the budget"
    assert len({c.key for c in ranked}) == len(ranked)
    if ranked:
        best = choose_index(count, dim, budget)
        assert best == ranked[0]
        assert (best.search_param is None) == (best.key == "Flat")
        if count <= FLAT_MAX and count * dim * 4 <= budget:
            assert best.key == "Flat"
        if "IVF" in best.key:
            nlist = ivf_lists(count)
            assert f"IVF{nlist}," in best.key and count >= 39 * nlist
    else:
        with pytest.raises(BankError, match="no index fits"):
            choose_index(count, dim, budget)


def test_is_pure(monkeypatch):
    """The choice depends on its arguments alone: no FAISS, no files, no memory probe, no randomness."""
    import builtins
    import os
    import random
    import sys

    import numpy as np

    cases = [(n, d, b) for n in (5_000, 300_000, 1_900_000, 50_000_000) for d in (64, 384) for b in (GiB // 4, 2 * GiB)]
    expected = [index_candidates(*c) for c in cases]

    def forbidden(*args, **kwargs):
        raise AssertionError("index choice touched the outside world")

    for module in ("faiss", "psutil", "torch"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(os, "stat", forbidden)
    monkeypatch.setattr(os, "sysconf", forbidden)
    random.seed(7)
    np.random.seed(7)
    assert [index_candidates(*c) for c in cases] == expected


def test_ivf_lists_grow_with_count():
    sizes = [ivf_lists(n) for n in (1, 10_000, 100_000, 1_000_000, 10_000_000, 10**10)]
    assert sizes == sorted(sizes) and sizes[0] == 256 and sizes[-1] == 65536


@pytest.mark.parametrize("count, dim", [(0, 384), (10, 0), (-1, 3)])
def test_bad_sizes(count, dim):
    with pytest.raises(BankError):
        choose_index(count, dim, GiB)
