"""The sufficient-statistics objective equals the direct blend-and-score, and its gradient is right."""

import numpy as np
import pytest

from ensemble.objective import BlendObjective, direct_cosines, mean_stats, raw_stats
from ensemble.optimum import gradient_optimum
from ensemble.synthetic import synthetic_problem


@pytest.fixture(scope="module")
def problem():
    runs, truth = synthetic_problem(500, 4, seed=3)
    stack = np.stack([r.embeddings for r in runs])
    stack[1, 7] = 0.0  # a run with an empty row must not break anything
    y = truth.embeddings
    mu = y[:250].mean(axis=0)
    mu = mu / np.linalg.norm(mu)
    return stack, y, mu


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("with_mean", [True, False])
def test_objective_equals_direct_computation(problem, normalise, with_mean):
    stack, y, mu = problem
    obj = BlendObjective(raw_stats(stack, y), normalise, mean_stats(stack, y, mu) if with_mean else None)
    rng = np.random.default_rng(0)
    for _ in range(5):
        c = rng.uniform(0, 1, size=5)
        direct = direct_cosines(stack, y, c, normalise, mu if with_mean else None)
        assert np.abs(obj.cosines(c) - direct).max() < 1e-9
        assert abs(obj(c) - direct.mean()) < 1e-9


def test_subset_statistics_match_subset_data(problem):
    stack, y, mu = problem
    rows = np.arange(100, 300)
    obj = BlendObjective(raw_stats(stack, y).take(rows), True, mean_stats(stack, y, mu).take(rows))
    c = np.array([1.0, 0.5, 0.2, 0.1, 0.3])
    assert abs(obj(c) - direct_cosines(stack[:, rows], y[rows], c, True, mu).mean()) < 1e-9


def test_gradient_matches_finite_differences(problem):
    stack, y, mu = problem
    obj = BlendObjective(raw_stats(stack, y), False, mean_stats(stack, y, mu))
    c = np.array([0.9, 0.4, 0.3, 0.2, 0.5])
    value, grad = obj.value_and_grad(c)
    assert value == pytest.approx(obj(c), abs=1e-12)
    eps = 1e-6
    fd = [(obj(c + eps * e) - obj(c - eps * e)) / (2 * eps) for e in np.eye(5)]
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_gradient_optimum_beats_random_blends_and_is_stationary(problem):
    stack, y, mu = problem
    obj = BlendObjective(raw_stats(stack, y), True, mean_stats(stack, y, mu))
    c, value = gradient_optimum(obj)
    assert c.max() == pytest.approx(1.0) and c.min() >= 0
    assert value == pytest.approx(obj(c), abs=1e-12)
    rng = np.random.default_rng(1)
    assert all(obj(rng.uniform(0, 1, 5)) <= value + 1e-12 for _ in range(200))
    _, grad = obj.value_and_grad(c)
    interior = (c > 1e-6) & (c < 1 - 1e-6)
    assert np.abs(grad[interior]).max() < 1e-6  # KKT: zero gradient off the bounds


def test_float32_statistics_stay_close(problem):
    stack, y, mu = problem
    raw, mean = raw_stats(stack, y), mean_stats(stack, y, mu)
    exact = BlendObjective(raw, True, mean)
    fast = BlendObjective(raw, True, mean, precision="float32")
    c = np.array([1.0, 0.6, 0.3, 0.2, 0.4])
    assert abs(fast(c) - exact(c)) < 1e-6
    with pytest.raises(ValueError):
        BlendObjective(raw, True, mean, precision="float16")


@pytest.mark.parametrize("normalise", [True, False])
def test_rows_read_in_place_match_subset_data_and_gradient(problem, normalise):
    stack, y, mu = problem
    rows = np.random.default_rng(4).permutation(500)[:180]
    raw = raw_stats(stack, y)
    obj = BlendObjective(raw, normalise, mean_stats(stack, y, mu), rows=rows)
    if not normalise:  # the run-run terms are the statistics' own array, not a copy
        assert np.shares_memory(obj._shared[0], raw.packed)
    c = np.array([0.9, 0.4, 0.3, 0.2, 0.5])
    direct = direct_cosines(stack[:, rows], y[rows], c, normalise, mu)
    assert np.abs(obj.cosines(c) - direct).max() < 1e-9
    value, grad = obj.value_and_grad(c)
    eps = 1e-6
    fd = [(obj(c + eps * e) - obj(c - eps * e)) / (2 * eps) for e in np.eye(5)]
    assert value == pytest.approx(direct.mean(), abs=1e-12)
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_packed_statistics_round_trip(problem):
    stack, y, _ = problem
    raw = raw_stats(stack, y)
    x = stack.astype(np.float64)
    gram = np.einsum("knd,jnd->nkj", x, x)
    np.testing.assert_allclose(raw.gram, gram, rtol=1e-12, atol=1e-12)
    sub = raw.select([2, 0])
    np.testing.assert_allclose(sub.gram, gram[:, [2, 0]][:, :, [2, 0]], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(type(raw).from_gram(raw.gram, raw.truth, raw.norms).packed, raw.packed)
