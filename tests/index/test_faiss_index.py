"""Index building, exact search, recall measurement and search-parameter tuning on real FAISS."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.choose import REFINE_K_FACTOR, IndexChoice
from index.faiss_index import (
    build_index,
    exact_search,
    recall_at_k,
    sample_queries,
    tune_search,
    write_index,
)
from promptblend.bank import read_index, set_search_param


def _clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    x = centres[rng.integers(0, 64, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_matches_numpy():
    keys = _clustered(3000, 16)
    q = sample_queries(keys, 20)
    d, i = exact_search(keys, q, 5)
    brute = np.argsort(-(q @ keys.T), axis=1)[:, :5]
    assert (i == brute).mean() > 0.99
    np.testing.assert_allclose(d, np.take_along_axis(q @ keys.T, i, 1), atol=1e-5)


def test_recall_at_k():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [-1, -1, -1, -1]])
    assert recall_at_k(found, truth) == pytest.approx(3 / 8)


@pytest.mark.parametrize("key, param", [("IVF64,Flat", "nprobe"), ("IVF64,SQ8", "nprobe"), ("HNSW32", "efSearch"),
                                        ("IVF64,PQ16x4fs,Refine(SQfp16)", "nprobe"), ("IVF64,PQ16x4fs,RFlat", "nprobe")])
def test_tuning_reaches_the_target_with_the_smallest_value(key, param):
    keys = _clustered(6000, 32)
    choice = IndexChoice(key, 0, param)
    index = build_index(keys, choice, progress=False)
    assert index.ntotal == len(keys)
    t = tune_search(index, choice, keys, target=0.88, n_queries=200, margin=0.02)
    assert t["reached"] and t["recall"] >= 0.9 and t["param"] == param
    values = [c[0] for c in t["curve"]]
    assert t["value"] == values[-1] and all(c[1] < 0.9 for c in t["curve"][:-1])
    # the tuned value is left set on the index: searching again gives that recall
    q = sample_queries(keys, 200, seed=1)
    _, truth = exact_search(keys, q, 10)
    _, found = index.search(q, 10)
    assert recall_at_k(found, truth) == pytest.approx(t["recall"], abs=1e-6)


def test_unreachable_target_keeps_the_best_value():
    keys = _clustered(2000, 16)
    choice = IndexChoice("IVF16,PQ2x4", 0, "nprobe")
    index = build_index(keys, choice, progress=False)
    t = tune_search(index, choice, keys, target=1.01, n_queries=100)
    assert not t["reached"] and t["recall"] >= max(c[1] for c in t["curve"]) - 0.002
    assert t["value"] < t["curve"][-1][0] or len(t["curve"]) <= 4, "stops at the plateau, not the slowest value"


def test_pick_on_the_measured_1_9m_curve():
    """IVF4096,SQ8 over 1.9M vectors: SQ8 caps recall near 0.967, so target + margin (0.97) is out of
    reach; the smallest nprobe reaching the target is taken, not the slowest one on the plateau."""
    from index.faiss_index import _pick

    curve = [[1, 0.8697, 0], [2, 0.9417, 0], [4, 0.9567, 0], [8, 0.9618, 0], [16, 0.9651, 0], [192, 0.9671, 0]]
    assert _pick(curve, 0.95, 0.02)[0] == 4
    assert _pick(curve, 0.94, 0.02)[0] == 8
    assert _pick(curve, 0.99, 0.0)[0] == 16


def test_refined_fast_scan_index_keeps_its_k_factor_on_disk(tmp_path):
    """The re-ranking depth is set at build time and saved in the file; a reloaded index with the
    manifest's nprobe answers exactly as the built one, and re-ranking beats the bare PQ codes."""
    import faiss

    keys = _clustered(6000, 32)
    choice = IndexChoice("IVF64,PQ16x4fs,Refine(SQfp16)", 0, "nprobe")
    index = build_index(keys, choice, progress=False)
    set_search_param(index, "nprobe", 8)
    write_index(index, tmp_path / "index.faiss")
    again = read_index(tmp_path / "index.faiss")
    set_search_param(again, "nprobe", 8)
    assert faiss.downcast_index(again).k_factor == REFINE_K_FACTOR
    q = sample_queries(keys, 200, seed=3)
    d1, i1 = index.search(q, 10)
    d2, i2 = again.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    _, truth = exact_search(keys, q, 10)
    bare = faiss.downcast_index(faiss.downcast_index(again).base_index)
    _, i_bare = bare.search(q, 10)
    assert recall_at_k(i1, truth) > recall_at_k(i_bare, truth) + 0.05


def test_tuning_on_given_queries_measures_recall_on_them():
    keys = _clustered(6000, 32)
    choice = IndexChoice("IVF64,Flat", 0, "nprobe")
    index = build_index(keys, choice, progress=False)
    q = _clustered(150, 32, seed=9)  # other points than the default mixtures of keys
    t = tune_search(index, choice, keys, target=0.9, queries=q)
    assert t["queries"] == 150
    _, truth = exact_search(keys, q, 10)
    _, found = index.search(q, 10)
    assert recall_at_k(found, truth) == pytest.approx(t["recall"], abs=1e-5)


WRITE_PAST_LIMIT = """
import resource, sys
import faiss, numpy as np
from index.faiss_index import write_index
from promptblend.errors import DiskFullError
index = faiss.IndexFlatIP(64)
index.add(np.ones((2000, 64), np.float32))
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    write_index(index, sys.argv[1], needed=2000 * 64 * 4)
except DiskFullError as e:
    print(e)
"""


def test_writing_an_index_past_a_file_size_limit_is_a_disk_full_error(tmp_path):
    """faiss's own writer reports EFBIG as a RuntimeError without errno; ours names it."""
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", WRITE_PAST_LIMIT, str(tmp_path / "index.faiss")], cwd=repo,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("file size limit exceeded writing") and "(needs 500.0 KB)" in r.stdout
    assert list(tmp_path.iterdir()) == []
