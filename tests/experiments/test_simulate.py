"""The split simulation: ordering, interval coverage, paired comparison, fixed splits."""

from __future__ import annotations

import numpy as np
import pytest
from lb_synthetic import graded_scores

from experiments.simulate import (
    CHUNK,
    bootstrap_counts,
    n_public_of,
    public_masks,
    ranks,
    simulate,
)
from promptblend.errors import ConfigError


def test_public_masks_exact_size_and_seeded():
    a = np.vstack(list(public_masks(1000, 200, 300, seed=3)))
    b = np.vstack(list(public_masks(1000, 200, 300, seed=3)))
    assert a.shape == (300, 1000) and (a.sum(axis=1) == 200).all()
    assert (a == b).all()
    assert not (a == np.vstack(list(public_masks(1000, 200, 300, seed=4)))).all()
    # every image is public about 20% of the time
    assert abs(a.mean() - 0.2) < 1e-12 and a.mean(axis=0).std() < 0.05


def test_boards_match_direct_computation():
    x = graded_scores(300, 4, 0.01, seed=1)
    sim = simulate(x, list("abcd"), splits=200, seed=5)
    masks = np.vstack(list(public_masks(300, n_public_of(300, 0.2), 200, seed=5)))
    for b in (0, 77, 199):
        m = masks[b]
        np.testing.assert_allclose(sim.public[b], x[:, m].mean(axis=1), rtol=0, atol=1e-12)
        np.testing.assert_allclose(sim.private[b], x[:, ~m].mean(axis=1), rtol=0, atol=1e-12)
    assert sim.n_public == 60 and sim.n_private == 240
    np.testing.assert_allclose(sim.full, x.mean(axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_ranks_true_order_as_gap_grows(seed):
    """Entries with known true ordering: P(true best wins) and rank agreement grow with the gap."""
    gaps = [0.0, 0.002, 0.01, 0.05]
    p_best, correct = [], []
    for gap in gaps:
        x = graded_scores(2000, 5, gap, seed=seed)
        sim = simulate(x, [f"e{i}" for i in range(5)], splits=300, seed=seed)
        p_best.append(sim.p_first("private")[0])
        correct.append((sim.ranks("private") == np.arange(1, 6)).all(axis=1).mean())
    assert p_best[0] < 0.6  # no gap: the "best" is no better than the others
    assert all(a <= b + 0.02 for a, b in zip(p_best, p_best[1:])), p_best
    assert all(a <= b + 0.02 for a, b in zip(correct, correct[1:])), correct
    assert p_best[-1] == 1.0 and correct[-1] == 1.0
    assert list(np.argsort(sim.ranks("private").mean(axis=0))) == [0, 1, 2, 3, 4]


def test_bootstrap_interval_covers_full_set_score_at_nominal_rate():
    """A 95% interval from 400 images drawn out of a 40,000-image full set covers its score ~95% of the time."""
    rng = np.random.default_rng(0)
    full = np.clip(rng.beta(4, 3, 40_000) + rng.normal(0, 0.05, 40_000), -1, 1)
    target = full.mean()
    seeds = 300
    hits = 0
    for s in range(seeds):
        sample = np.random.default_rng(1000 + s).choice(full, 400, replace=False)
        lo, hi = simulate(sample[None, :], ["x"], splits=400, seed=s).ci()
        hits += lo[0] <= target <= hi[0]
    rate = hits / seeds
    assert 0.91 <= rate <= 0.985, rate


def test_board_range_covers_a_fresh_split_at_nominal_rate():
    x = graded_scores(500, 1, 0.0, seed=2)
    seeds, hits = 300, 0
    for s in range(seeds):
        lo, hi = simulate(x, ["x"], splits=300, seed=s).board_range("private")
        fresh = next(public_masks(500, 100, 1, seed=10_000 + s))[0]
        hits += lo[0] <= x[0, ~fresh].mean() <= hi[0]
    assert 0.91 <= hits / seeds <= 0.99, hits / seeds


def test_paired_comparison_agrees_with_direct_computation():
    x = graded_scores(800, 3, 0.004, seed=3)
    splits, seed = 300, 9
    sim = simulate(x, ["a", "b", "c"], splits=splits, seed=seed)
    c = sim.compare("a", "b")
    d = x[0] - x[1]
    # P(a beats b on the private board): loop over the very same splits
    wins = [d[~m].mean() > 0 for m in np.vstack(list(public_masks(800, 160, splits, seed=seed)))]
    assert c.p_a_wins_private == pytest.approx(np.mean(wins), abs=1e-12)
    # paired bootstrap: loop over the same resamples, one image index at a time
    rng = np.random.default_rng([seed, 1])
    diffs = []
    for start in range(0, splits, CHUNK):
        counts = bootstrap_counts(800, np.arange(800), min(CHUNK, splits - start), rng)
        diffs += [(w * d).sum() / 800 for w in counts]
    np.testing.assert_allclose(c.ci, np.quantile(diffs, [0.025, 0.975]), atol=1e-12)
    assert c.diff == pytest.approx(d.mean())
    # and the interval matches the normal approximation mean +- 1.96 sd / sqrt(n)
    half = 1.96 * d.std(ddof=1) / np.sqrt(800)
    assert c.ci[0] == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert c.ci[1] == pytest.approx(d.mean() + half, abs=0.25 * half)
    # names may be given by unique part; b vs a mirrors a vs b
    r = sim.compare("b", "a")
    assert r.p_a_wins_private == pytest.approx(1 - c.p_a_wins_private)
    with pytest.raises(ConfigError, match="matches no entry"):
        sim.compare("a", "zzz")


def test_fixed_split_resamples_within_each_board():
    x = graded_scores(400, 3, 0.01, seed=4)
    mask = np.zeros(400, bool)
    mask[:80] = True
    sim = simulate(x, ["a", "b", "c"], splits=500, seed=0, public_mask=mask)
    assert sim.fixed_split and sim.n_public == 80
    np.testing.assert_allclose(sim.public.mean(axis=0), x[:, :80].mean(axis=1), atol=0.01)
    np.testing.assert_allclose(sim.private.mean(axis=0), x[:, 80:].mean(axis=1), atol=0.005)
    lo, hi = sim.board_range("private")
    assert ((lo <= x[:, 80:].mean(axis=1)) & (x[:, 80:].mean(axis=1) <= hi)).all()
    with pytest.raises(ConfigError, match="at least one public and one private"):
        simulate(x, ["a", "b", "c"], public_mask=np.ones(400, bool))


def test_rank_summaries_are_consistent():
    x = graded_scores(200, 4, 0.003, seed=5)
    sim = simulate(x, list("abcd"), splits=250, seed=1)
    dist = sim.rank_distribution("private")
    np.testing.assert_allclose(dist.sum(axis=0), 1)
    np.testing.assert_allclose(dist.sum(axis=1), 1)
    np.testing.assert_allclose(dist[:, 0], sim.p_first("private"))
    assert sim.p_first("public").sum() == pytest.approx(1)
    assert sim.shakeup().min() >= 0 and abs(sim.rank_shift().sum()) < 1e-9
    assert 0 <= sim.p_leader_holds() <= 1
    assert (ranks(np.array([[0.1, 0.3, 0.2]])) == [[3, 1, 2]]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"splits": 0}, "splits"), ({"public_fraction": 1.0}, "public fraction"), ({"level": 1.5}, "level")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        simulate(np.zeros((2, 10)), ["a", "b"], **kwargs)
    with pytest.raises(ConfigError, match="2 images"):
        n_public_of(1, 0.2)


def test_a_tie_shares_the_rank_and_splits_first_place():
    assert (ranks(np.array([[0.2, 0.3, 0.3, 0.1, 0.2]])) == [[3, 1, 1, 5, 3]]).all()
    x = graded_scores(200, 3, 0.01, seed=2)
    x = np.vstack([x[2], x[0], x[2], x[1]])  # entries 0 and 2 are the same predictions, listed apart
    sim = simulate(x, ["twin-a", "best", "twin-b", "mid"], splits=300, seed=3)
    for board in ("public", "private"):
        r = sim.ranks(board)
        assert (r[:, 0] == r[:, 2]).all()
        p1 = sim.p_first(board)
        assert p1[0] == pytest.approx(p1[2]) and p1.sum() == pytest.approx(1)
        dist = sim.rank_distribution(board)
        np.testing.assert_allclose(dist.sum(axis=0), 1)
        np.testing.assert_allclose(dist.sum(axis=1), 1)
        np.testing.assert_allclose(dist[:, 0], p1)
    far = simulate(np.vstack([x[1], x[1] - 0.3, x[1]]), ["a", "c", "b"], splits=50, seed=1)  # twins always lead
    assert list(far.p_first("private")) == [0.5, 0.0, 0.5] and far.p_leader_holds() == 0.5


def test_the_table_gives_tied_entries_one_rank():
    from experiments.entries import KINDS, Entry
    from experiments.report import table_rows

    x = graded_scores(100, 2, 0.05, seed=4)
    sim = simulate(np.vstack([x[1], x[0], x[1]]), ["twin-a", "best", "twin-b"], splits=20, seed=0)
    rows = table_rows(sim, [Entry(n, KINDS[0], loader=lambda: None) for n in sim.names])
    assert [(r["rank"], r["name"]) for r in rows] == [(1, "best"), (2, "twin-a"), (2, "twin-b")]
    assert rows[1]["p_first_private"] == rows[2]["p_first_private"]
