"""The leaderboard's figures: what they draw (artists and data), that the PNGs are drawn, and no pyplot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from drawn import assert_drawn
from lb_synthetic import graded_scores

from experiments import plots
from experiments.simulate import simulate
from promptblend.figures import save_figure

NAMES = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def sim():
    x = graded_scores(400, len(NAMES), 0.02, seed=3)[[2, 0, 3, 1]]  # entries not in rank order
    return simulate(x, NAMES, splits=150, seed=1)


def _order(sim) -> list[int]:
    return list(np.argsort(-sim.full, kind="stable"))


def test_intervals_draws_every_entry_in_rank_order(sim, tmp_path):
    order = _order(sim)
    tuning = [None, {"in_sample": 0.7, "out_of_fold": 0.65}, None, None]
    fig = plots.intervals(sim, order, tuning)
    ax, gaps = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [NAMES[i] for i in order]
    dots = next(line for line in ax.get_lines() if line.get_label() == "score (all images)")
    np.testing.assert_allclose(dots.get_xdata(), sim.full[order])
    np.testing.assert_allclose(dots.get_ydata(), np.arange(len(order))[::-1])
    marks = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if "best.json" in line.get_label()}
    assert marks == {"in-sample (best.json)": 0.7, "out-of-fold (best.json)": 0.65}
    gap_dots = gaps.get_lines()[0]
    np.testing.assert_allclose(gap_dots.get_xdata(), sim.full[order[1:]] - sim.full[order[0]])
    assert (gap_dots.get_xdata() < 0).all()
    assert_drawn(save_figure(fig, tmp_path / "intervals.png", dpi=120), min_size=(1000, 250))


def test_public_private_scatters_each_split(sim, tmp_path):
    order = _order(sim)
    fig = plots.public_private(sim, order)
    (ax,) = fig.axes
    points = ax.collections
    assert len(points) == len(NAMES)
    for coll, i in zip(points, order):
        np.testing.assert_allclose(coll.get_offsets(), np.column_stack([sim.public[:, i], sim.private[:, i]]))
    assert_drawn(save_figure(fig, tmp_path / "pp.png", dpi=120), min_size=(600, 600))


def test_ranks_heatmap_is_the_rank_distribution(sim, tmp_path):
    order = _order(sim)
    fig = plots.ranks(sim, order)
    image = fig.axes[0].get_images()[0]
    np.testing.assert_allclose(image.get_array(), sim.rank_distribution("private")[order])
    np.testing.assert_allclose(image.get_array().sum(axis=1), 1)
    assert_drawn(save_figure(fig, tmp_path / "ranks.png", dpi=120), min_size=(500, 250))


def test_histogram_counts_every_image(sim, tmp_path):
    scores = np.random.default_rng(0).uniform(0.2, 0.9, 400)
    fig = plots.histogram(scores, "alpha")
    (ax,) = fig.axes
    assert sum(p.get_height() for p in ax.patches) == 400
    mean_line = ax.get_lines()[0]
    assert mean_line.get_xdata()[0] == pytest.approx(scores.mean())
    assert_drawn(save_figure(fig, tmp_path / "hist.png", dpi=120), min_size=(600, 350))


def test_a_blank_png_fails_the_check(tmp_path):
    from PIL import Image

    Image.new("RGB", (800, 600), "white").save(tmp_path / "blank.png")
    with pytest.raises(AssertionError, match="blank"):
        assert_drawn(tmp_path / "blank.png")


def test_figures_never_load_pyplot(tmp_path):
    """Building and saving every leaderboard figure and the page leaves pyplot unimported."""
    code = (
        "import sys, numpy as np\n"
        "from experiments import plots\nfrom experiments.simulate import simulate\n"
        "from promptblend.figures import save_figure\nfrom promptblend.page import Page\n"
        "x = np.random.default_rng(0).uniform(0, 1, (3, 50)); s = simulate(x, ['a', 'b', 'c'], splits=20)\n"
        "for f in (plots.intervals(s, [0, 1, 2], [None] * 3), plots.public_private(s, [0, 1, 2]),\n"
        "          plots.ranks(s, [0, 1, 2]), plots.histogram(x[0], 'a')):\n"
        f"    save_figure(f, {str(tmp_path / 'f.png')!r}); Page('t').image(f, 'alt').html()\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
