"""Prompt groups (FAISS pairs; near-duplicates merged, bounded groups above the threshold) and group-respecting folds."""

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from ensemble.cv import NEAR_DUPLICATE, group_folds, prompt_groups, similar_pairs, similarity_groups
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


def _chain(n, step_cos, rng):
    """A random walk on the sphere whose consecutive rows have cosine ``step_cos`` (a percolating chain)."""
    rows = [_unit(rng.normal(size=384))]
    for _ in range(n - 1):
        rows.append(_at_angle(rows[-1], rng.normal(size=384), step_cos))
    return np.stack(rows)


def _with_near_duplicates(n, seed):
    """Synthetic prompts plus a few near-duplicate chains (each link at cosine 0.93)."""
    rng = np.random.default_rng(seed)
    y = synthetic_truth(n, seed=seed).astype(np.float64)
    extra = [_chain(4, 0.93, rng) for _ in range(10)]
    return np.concatenate([y, *extra]).astype(np.float32)


def test_near_duplicates_chain_but_similar_prompts_do_not():
    rng = np.random.default_rng(0)
    e = [_unit(rng.normal(size=384)) for _ in range(8)]
    a = e[0]
    b = _at_angle(a, e[1], 0.8)  # a-b 0.8
    c = _at_angle(b, e[2], 0.8)  # b-c 0.8, a-c below 0.7: only through b
    d = e[3]
    d1 = _at_angle(d, e[4], 0.93)
    d2 = _at_angle(d1, e[5], 0.93)  # d-d2 below 0.9, but near-duplicates chain: one group
    y = np.stack([a, b, c, d, d1, d2, e[6]]).astype(np.float32)
    assert float(a @ c) < 0.7 and float(d @ d2) < NEAR_DUPLICATE
    g = similarity_groups(y, 0.7)
    assert g[0] != g[2]  # no chain through b
    assert g[1] in (g[0], g[2])
    assert g[3] == g[4] == g[5]
    assert len(set(g.tolist())) == 4
    assert g[0] == 0  # numbered by first row


def test_pairs_agree_with_brute_force():
    y = synthetic_truth(300, seed=5)
    i, j, s = similar_pairs(y, 0.7, chunk=64)
    sim = y.astype(np.float64) @ y.T.astype(np.float64)
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(sim >= 0.7, k=1)))}
    assert set(zip(i.tolist(), j.tolist())) == want
    np.testing.assert_allclose(s, sim[i, j], atol=1e-5)


@pytest.mark.parametrize("threshold", [0.6, 0.7])
def test_groups_stay_within_the_diameter_bound(threshold):
    y = _with_near_duplicates(600, seed=3)
    groups = prompt_groups(y, threshold)
    sim = y.astype(np.float64) @ y.T.astype(np.float64)
    _, unit = connected_components(sim >= NEAR_DUPLICATE - 1e-6, directed=False)
    for g in np.flatnonzero(groups.sizes > 1):
        rows = np.flatnonzero(groups.labels == g)
        inner = sim[np.ix_(rows, rows)]
        same_unit = unit[rows][:, None] == unit[rows][None, :]
        # two rows of a group: within the threshold, unless near-duplicates chain them
        assert (inner[~same_unit] >= threshold - 1e-5).all()
    assert groups.sizes.max() < 20


def test_near_duplicate_pairs_always_share_a_fold():
    y = _with_near_duplicates(1000, seed=4)
    groups = prompt_groups(y, 0.7)
    folds = group_folds(groups.labels, 5, seed=0)
    sim = y.astype(np.float64) @ y.T.astype(np.float64)
    a, b = np.nonzero(np.triu(sim >= NEAR_DUPLICATE, k=1))
    assert a.size >= 30
    assert (folds[a] == folds[b]).all()
    split = groups.split_share(folds)
    assert split["near_pairs"] == a.size and split["near_split"] == 0
    assert 0.0 <= split["similar_split"] <= 1.0 and split["similar_pairs"] > 0


def test_folds_balanced_where_transitive_grouping_percolates():
    rng = np.random.default_rng(7)
    chained = _chain(1000, 0.8, rng)  # consecutive rows 0.8 apart, rows two apart below 0.7
    y = np.concatenate([chained, np.stack([_unit(rng.normal(size=384)) for _ in range(1000)])]).astype(np.float32)
    sim = y.astype(np.float64) @ y.T.astype(np.float64)
    _, transitive = connected_components(sim >= 0.7, directed=False)
    assert np.bincount(transitive).max() >= 1000  # today's grouping: one group of half the images
    groups = prompt_groups(y, 0.7)
    assert groups.sizes.max() <= 3
    for pairs in (None, (groups.i, groups.j)):
        folds = group_folds(groups.labels, 5, seed=0, pairs=pairs)
        sizes = np.bincount(folds, minlength=5)
        assert np.abs(sizes - sizes.mean()).max() <= 0.05 * sizes.mean()
    # placed by their similar pairs, the chain is cut in a few places only (by size alone: at many links)
    cut = groups.split_share(folds)["similar_split"]
    assert cut < 0.02 and groups.split_share(group_folds(groups.labels, 5, seed=0))["similar_split"] > 10 * cut


def test_folds_keep_groups_whole_and_balanced():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 120, size=1000)
    folds = group_folds(groups, 5, seed=1)
    for gid in np.unique(groups):
        assert len(set(folds[groups == gid].tolist())) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= np.bincount(groups).max()
    np.testing.assert_array_equal(folds, group_folds(groups, 5, seed=1))  # deterministic


def test_too_few_groups_or_folds_or_a_bad_threshold_is_an_error():
    with pytest.raises(ConfigError, match="prompt groups"):
        group_folds(np.array([0, 0, 1, 1]), 3)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        group_folds(np.arange(10), 1)
    with pytest.raises(ConfigError, match="group threshold"):
        prompt_groups(synthetic_truth(10), 1.5)
