"""Blending runs: alignment, bad inputs as named errors, apply_blend, params files, snap-to-bank."""

import numpy as np
import pytest

from ensemble.align import align
from ensemble.blend import BlendParams, apply_blend, load_params, save_params
from ensemble.objective import direct_cosines
from ensemble.snap import best_threshold
from ensemble.synthetic import synthetic_problem
from promptblend.bank import Bank
from promptblend.errors import AlignmentError, BlendError, EmbeddingError
from promptblend.runs import Run


@pytest.fixture(scope="module")
def problem():
    return synthetic_problem(120, 3, seed=1)


def test_align_reorders_runs_by_id(problem):
    runs, truth = problem
    shuffled = runs[1].select(list(reversed(runs[1].ids)))
    data = align([runs[0], shuffled, runs[2]], truth)
    np.testing.assert_array_equal(data.stack[1], runs[1].embeddings)
    assert data.ids == runs[0].ids and data.names == ["run0", "run1", "run2"]


def test_mismatched_ids_error_or_intersect(problem):
    runs, truth = problem
    short = runs[2].select(runs[2].ids[10:])
    with pytest.raises(AlignmentError, match="--intersect"):
        align([runs[0], runs[1], short], truth)
    data = align([runs[0], runs[1], short], truth, intersect=True)
    assert len(data.ids) == 110 and data.dropped == {"run0": 10, "run1": 10, "truth": 10}
    with pytest.raises(AlignmentError, match="no image ids in common"):
        align([runs[0], Run(["other"], runs[1].embeddings[:1], {"name": "x"})], intersect=True)


def test_bad_inputs_raise_named_errors(problem):
    runs, truth = problem
    with pytest.raises(BlendError, match="no runs"):
        align([], truth)
    with pytest.raises(BlendError, match="at least 2 runs"):
        align(runs[:1], truth)
    with pytest.raises(BlendError, match="unique"):
        align([runs[0], runs[0]], truth)
    bad = runs[1].embeddings.copy()
    bad[5, 3] = np.nan
    with pytest.raises(EmbeddingError, match="NaN"):
        Run(runs[1].ids, bad, {"name": "nan"})
    mutated = Run(runs[1].ids, runs[1].embeddings.copy(), {"name": "mutated"})
    mutated.embeddings[4] = np.nan  # broken after construction: align still refuses it
    with pytest.raises(EmbeddingError, match="NaN"):
        align([runs[0], mutated], truth)
    with pytest.raises(EmbeddingError, match="384 columns"):
        Run(runs[1].ids, np.ones((120, 100), np.float32), {"name": "dims"})
    with pytest.raises(AlignmentError, match="repeats"):
        Run(["a", "a"], np.ones((2, 384), np.float32))


def test_apply_blend_matches_direct_blend(problem, tmp_path):
    runs, truth = problem
    mu = truth.embeddings.mean(axis=0)
    mu = mu / np.linalg.norm(mu)
    params = BlendParams({"run0": 1.0, "run1": 0.4, "run2": 0.1}, mean_weight=0.3, normalise=True, mean_vector=mu)
    emb = apply_blend(params, [runs[2], runs[0], runs[1]])
    assert emb.shape == (120, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    stack = np.stack([r.embeddings for r in runs])
    c = np.array([1.0, 0.4, 0.1, 0.3])
    direct = direct_cosines(stack, truth.embeddings, c, True, mu)
    got = np.einsum("ij,ij->i", emb.astype(np.float64), truth.embeddings)
    np.testing.assert_allclose(got, direct, atol=1e-5)
    save_params(tmp_path, params, {"in_sample": 0.5})
    back = load_params(tmp_path / "best.json")
    assert back.weights == params.weights and back.normalise and back.mean_weight == 0.3
    np.testing.assert_allclose(apply_blend(back, runs), emb, atol=1e-6)
    with pytest.raises(BlendError, match="no run given comes from it"):
        apply_blend(params, runs[:2])


def test_snap_threshold_is_the_best_cut():
    rng = np.random.default_rng(4)
    sim = rng.uniform(0.3, 1.0, 200)
    snapped = rng.uniform(0, 1, 200) + (sim > 0.8) * 0.5
    blended = rng.uniform(0, 1, 200)
    t, gain = best_threshold(sim, snapped, blended)
    brute = max((np.where(sim >= s, snapped, blended).mean() - blended.mean(), s) for s in sim)
    assert t == pytest.approx(brute[1]) and gain == pytest.approx(brute[0])
    assert best_threshold(sim, blended - 1, blended) == (None, 0.0)


def test_bank_snaps_close_rows_only(problem):
    runs, truth = problem
    bank = Bank(truth.embeddings[:50])
    query = truth.embeddings.copy()
    query[:50] += 0.05 * runs[0].embeddings[:50] / np.linalg.norm(runs[0].embeddings[:50], axis=1, keepdims=True)
    out = bank.snap(query, 0.99)
    np.testing.assert_allclose(out[:50], truth.embeddings[:50], atol=1e-6)
    sim, _ = bank.nearest_values(query[50:])
    np.testing.assert_array_equal(out[50:][sim < 0.99], query[50:][sim < 0.99])


def test_storage_url_hides_the_password(tmp_path):
    from ensemble.search import storage_spec

    spec = storage_spec("postgresql://user:secret@db.example:5432/optuna", tmp_path)
    assert "secret" not in spec.public_url and spec.url.startswith("postgresql")
    assert storage_spec(None, tmp_path).kind == "sqlite"
    assert storage_spec(None, tmp_path, workers=3).kind == "journal"
