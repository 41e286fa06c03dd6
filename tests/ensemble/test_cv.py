"""Prompt-similarity groups (FAISS, cosine >= 0.7, chained) and group-respecting folds."""

import numpy as np
import pytest

from ensemble.cv import group_folds, similarity_groups
from ensemble.synthetic import synthetic_truth
from promptblend.errors import ConfigError


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _at_angle(base, other, cos):
    """A unit vector in span(base, other) with the given cosine to ``base``."""
    o = other - (other @ base) * base
    o = o / np.linalg.norm(o)
    return cos * base + np.sqrt(1 - cos**2) * o


def test_groups_chain_pairs_above_threshold():
    rng = np.random.default_rng(0)
    e = [_unit(rng.normal(size=384)) for _ in range(6)]
    a = e[0]
    b = _at_angle(a, e[1], 0.8)  # a-b 0.8
    c = _at_angle(b, e[2], 0.8)  # b-c 0.8, a-c below 0.7: same group only through b
    far = e[3]
    near_far = _at_angle(far, e[4], 0.69)  # just below the threshold: own group
    y = np.stack([a, b, c, far, near_far, e[5]]).astype(np.float32)
    assert float(a @ c) < 0.7
    g = similarity_groups(y, 0.7)
    assert g[0] == g[1] == g[2]
    assert len({g[0], g[3], g[4], g[5]}) == 4
    assert g.tolist()[:4] == [0, 0, 0, 1]  # numbered by first row


def test_groups_agree_with_brute_force():
    y = synthetic_truth(400, seed=5)
    g = similarity_groups(y, 0.7, chunk=64)
    sim = y.astype(np.float64) @ y.T.astype(np.float64)
    from scipy.sparse.csgraph import connected_components

    _, ref = connected_components(sim >= 0.7, directed=False)
    # same partition: a one-to-one map between labels
    pairs = set(zip(g.tolist(), ref.tolist()))
    assert len(pairs) == len(set(g.tolist())) == len(set(ref.tolist()))
    assert len(set(g.tolist())) < 400  # the synthetic prompts do cluster


def test_folds_keep_groups_whole_and_balanced():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 120, size=1000)
    folds = group_folds(groups, 5, seed=1)
    for gid in np.unique(groups):
        assert len(set(folds[groups == gid].tolist())) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= np.bincount(groups).max()
    np.testing.assert_array_equal(folds, group_folds(groups, 5, seed=1))  # deterministic


def test_too_few_groups_or_folds_is_an_error():
    with pytest.raises(ConfigError, match="prompt groups"):
        group_folds(np.array([0, 0, 1, 1]), 3)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        group_folds(np.arange(10), 1)
