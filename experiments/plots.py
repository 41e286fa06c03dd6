"""Figures of a leaderboard simulation: intervals, public vs private, rank distribution, histogram.

Each function returns a matplotlib ``Figure`` built without pyplot (:func:`promptblend.figures.new_figure`);
the caller saves it (:func:`promptblend.figures.save_figure`) or embeds it in a page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from promptblend.figures import new_figure

from .simulate import Simulation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_SCATTER = 6
MAX_LABEL = 38
MAX_GAPS = 8


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def intervals(sim: Simulation, order: Sequence[int], tuning: Sequence[dict | None]) -> Figure:
    """Left: each entry's score, bootstrap interval and private-board range (plus best.json's
    in-sample / out-of-fold scores for tuned blends). Right: the runners-up's paired difference to
    the leader, zoomed so that small gaps and their intervals stay visible."""
    e = len(order)
    idx = np.asarray(order)
    height = max(3.0, 0.42 * e + 1.6)
    fig = new_figure(13 if e > 1 else 9, height)
    if e > 1:
        ax, dx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    else:
        ax = fig.subplots()
    lo, hi = sim.ci()
    plo, phi = sim.board_range("private")
    y = np.arange(e)[::-1]
    pct = int(round(sim.level * 100))
    ax.hlines(y, plo[idx], phi[idx], color="tab:blue", alpha=0.3, lw=9, label=f"private board, {pct}% of {'resamples' if sim.fixed_split else 'splits'}")
    ax.hlines(y, lo[idx], hi[idx], color="black", lw=1.6, label=f"bootstrap {pct}% interval")
    ax.plot(sim.full[idx], y, "o", color="black", ms=5, label="score (all images)")
    shown = set()
    for yy, i in zip(y, idx):
        t = tuning[i] or {}
        for key, dy, marker, color, text in (("in_sample", 0.2, "x", "tab:red", "in-sample (best.json)"),
                                             ("out_of_fold", -0.2, "P", "tab:orange", "out-of-fold (best.json)")):
            if t.get(key) is not None:  # just above / below the row, so the score dot stays visible
                ax.plot(t[key], yy + dy, marker, color=color, ms=7, label=None if key in shown else text)
                shown.add(key)
    ax.set_yticks(y, [_label(sim.names[i]) for i in idx])
    ax.set_xlabel("mean cosine score")
    how = "resamples of the fixed split" if sim.fixed_split else "random splits"
    ax.set_title(f"Scores and intervals ({sim.splits} {how})")
    ax.grid(axis="x", alpha=0.3)
    below = -0.62 / (0.77 * height)  # about 0.6 inch under the axes, whatever the figure's height
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=3, fontsize=8, frameon=False)
    if e > 1:
        _plot_gaps(dx, sim, idx, pct)
    return fig


def _plot_gaps(ax, sim: Simulation, idx: np.ndarray, pct: int) -> None:
    from matplotlib.ticker import MaxNLocator

    lead, rest = idx[0], idx[1 : MAX_GAPS + 1]
    a = (1 - sim.level) / 2
    boot = sim.boot[:, rest] - sim.boot[:, [lead]]
    priv = sim.private[:, rest] - sim.private[:, [lead]]
    blo, bhi = np.quantile(boot, [a, 1 - a], axis=0)
    plo, phi = np.quantile(priv, [a, 1 - a], axis=0)
    y = np.arange(len(rest))[::-1]
    ax.hlines(y, plo, phi, color="tab:blue", alpha=0.3, lw=9)
    ax.hlines(y, blo, bhi, color="black", lw=1.6)
    ax.plot(sim.full[rest] - sim.full[lead], y, "o", color="black", ms=5)
    ax.axvline(0, color="tab:red", lw=1, ls="--")
    ax.set_yticks(y, [_label(sim.names[i]) for i in rest])
    ax.yaxis.tick_right()
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"score minus the leader's\n({_label(sim.names[lead])})")
    more = f", first {len(rest)}" if len(idx) - 1 > len(rest) else ""
    ax.set_title(f"Gap to the leader, paired {pct}% intervals{more}")
    ax.grid(axis="x", alpha=0.3)


def public_private(sim: Simulation, order: Sequence[int]) -> Figure:
    """Public vs private score over the simulated splits for the top entries."""
    fig = new_figure(7, 6.5)
    ax = fig.subplots()
    top = list(order)[:MAX_SCATTER]
    for i in top:
        ax.scatter(sim.public[:, i], sim.private[:, i], s=6, alpha=0.35, label=_label(sim.names[i]))
    lo = min(sim.public[:, top].min(), sim.private[:, top].min())
    hi = max(sim.public[:, top].max(), sim.private[:, top].max())
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--", label="public = private")
    ax.set_xlabel(f"public score ({sim.n_public} images)")
    ax.set_ylabel(f"private score ({sim.n_private} images)")
    shown = f"top {len(top)} of {len(sim.names)} entries" if len(sim.names) > len(top) else "all entries"
    ax.set_title(f"Public vs private over {sim.splits} {'resamples' if sim.fixed_split else 'splits'} ({shown})")
    ax.grid(alpha=0.3)
    leg = ax.legend(fontsize=8, markerscale=3, loc="upper left")
    for h in leg.legend_handles:
        h.set_alpha(1)
    return fig


def ranks(sim: Simulation, order: Sequence[int]) -> Figure:
    """Heatmap of each entry's rank distribution on the private board."""
    e = len(order)
    dist = sim.rank_distribution("private")[np.asarray(order)]
    fig = new_figure(max(6, 0.32 * e + 3.5), max(2.8, 0.38 * e + 1.6))
    ax = fig.subplots()
    im = ax.imshow(dist, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(e), [_label(sim.names[i]) for i in order])
    step = max(1, e // 20)
    ax.set_xticks(range(0, e, step), [str(r + 1) for r in range(0, e, step)])
    ax.set_xlabel("private rank (1 = best)")
    ax.set_title(f"Private-board rank distribution over {sim.splits} {'resamples' if sim.fixed_split else 'splits'}")
    if e <= 12:
        for r in range(e):
            for c in range(e):
                if dist[r, c] >= 0.005:
                    ax.text(c, r, f"{dist[r, c]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if dist[r, c] > 0.55 else "black")
    fig.colorbar(im, ax=ax, label="fraction of splits", fraction=0.04, pad=0.02)
    return fig


def histogram(scores: np.ndarray, name: str) -> Figure:
    """Histogram of the best entry's per-image cosine scores."""
    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    bins = int(np.clip(np.sqrt(scores.size), 10, 60))
    ax.hist(scores, bins=bins, color="tab:blue", alpha=0.8, edgecolor="white")
    m, med = float(scores.mean()), float(np.median(scores))
    ax.axvline(m, color="black", lw=1.5, label=f"mean {m:.4f}")
    ax.axvline(med, color="tab:orange", lw=1.5, ls="--", label=f"median {med:.4f}")
    ax.set_xlabel("per-image cosine similarity")
    ax.set_ylabel("images")
    ax.set_title(f"Per-image scores of the best entry: {_label(name)} ({scores.size} images)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig
