"""The tuner at scale: runs aligned without a copy (index views, memory maps), objectives built once per study."""

import tracemalloc

import numpy as np
import pytest

from ensemble.align import RunStack, align, load_runs
from ensemble.objective import raw_stats
from ensemble.synthetic import synthetic_problem
from promptblend.runs import save_run


@pytest.fixture(scope="module")
def problem():
    return synthetic_problem(400, 6, seed=2)


def test_align_makes_no_copy_of_the_runs(problem):
    runs, truth = problem
    reordered = runs[3].select(list(reversed(runs[3].ids)))
    given = runs[:3] + [reordered] + runs[4:]
    tracemalloc.start()
    data = align(given, truth)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    runs_bytes = sum(r.embeddings.nbytes for r in runs)
    assert isinstance(data.stack, RunStack) and data.stack.shape == (6, 400, 384)
    for j, r in enumerate(given):
        assert data.stack.arrays[j] is r.embeddings  # the run's own array, reordered by an index
    assert data.stack.rows[3] is not None and all(data.stack.rows[j] is None for j in (0, 1, 2, 4, 5))
    assert np.shares_memory(data.stack[0], runs[0].embeddings)
    np.testing.assert_array_equal(data.stack[3], runs[3].embeddings)
    np.testing.assert_array_equal(data.stack[3, 10:20], runs[3].embeddings[10:20])
    # the unit truth (one run's size) and its temporaries, the index: not another copy of the 6 runs
    assert peak < 2.5 * runs[0].embeddings.nbytes < 0.5 * runs_bytes
    full = np.stack([r.embeddings for r in runs])
    a, b = raw_stats(data.stack, data.truth), raw_stats(full, data.truth)
    np.testing.assert_array_equal(a.packed, b.packed)
    np.testing.assert_allclose(np.asarray(data.stack), full)


def _mapped(a) -> bool:
    """Whether ``a`` reads a memory-mapped file (itself or through the arrays it views)."""
    import mmap

    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def test_runs_from_folders_are_memory_mapped(problem, tmp_path):
    runs, truth = problem
    for r in runs[:3]:
        save_run(tmp_path / r.name, r)
    loaded = load_runs([tmp_path])
    data = align(loaded, truth)
    assert all(_mapped(a) for a in data.stack.arrays)
    np.testing.assert_array_equal(data.stack[1], runs[1].embeddings)


def test_objectives_built_once_per_study(problem, tmp_path, monkeypatch):
    import ensemble.tune.plan as plan_module
    from ensemble.tune import tune

    built = []

    class Counted(plan_module.BlendObjective):
        def __init__(self, stats, normalise, mean, precision="float64", rows=None):
            built.append((len(rows), normalise))
            super().__init__(stats, normalise, mean, precision, rows)

    monkeypatch.setattr(plan_module, "BlendObjective", Counted)
    runs, truth = problem
    result = tune(runs[:3], truth, tmp_path, trials=8, folds=2, seed=0, progress=False, report=False)
    # 2 fold studies + the final one, each with both settings of the normalisation switch: built
    # once for its gradient optimum and its trials; the final's also served the evaluation
    assert len(built) == 3 * 2
    assert sorted(norm for _, norm in built) == [False] * 3 + [True] * 3
    assert sorted(n for n, _ in built)[-2:] == [400, 400]
    assert result.gradient_gap >= -1e-9 and result.in_sample >= max(result.single_scores.values()) - 1e-9
    assert sum(result.fold_sizes) == 400 and len(result.fold_sizes) == 2
    assert result.largest_group == max(np.bincount(np.loadtxt(tmp_path / "folds.csv", delimiter=",", skiprows=1,
                                                              usecols=2, dtype=np.int64)))
    assert set(result.pair_split) == {"similar_pairs", "similar_split", "near_pairs", "near_split"}
    assert result.pair_split["near_split"] == 0
