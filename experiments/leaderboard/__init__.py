"""The leaderboard API: score entries once per image, simulate the boards; record and write on request.

``leaderboard(entries, truth)`` computes and returns a :class:`LeaderboardResult` (no printing, no
files, no record). What ``python -m experiments.leaderboard`` does with it are separate calls:
:func:`record_result` (the SQLite experiment record), :func:`write_outputs` (``leaderboard.csv``,
``summary.json``, the PNG plots and the self-contained ``leaderboard.html``) and
:func:`experiments.report.print_report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend.errors import ConfigError
from promptblend.runs import Run
from promptblend.truth import load_truth

from .. import pages, plots, report
from ..board import LeaderboardResult
from ..entries import BASELINE, Entry, mean_vector_entry, score_entries
from ..simulate import PUBLIC_FRACTION, simulate

__all__ = [
    "LeaderboardResult", "leaderboard", "public_mask", "read_public_ids", "record_result", "write_html",
    "write_outputs", "write_plots",
]

#: Plot files written beside ``leaderboard.csv``, by key.
PLOT_FILES = {
    "intervals": "intervals.png", "public_private": "public_private.png", "ranks": "ranks.png",
    "histogram": "per_image_hist.png",
}
PLOT_DPI = 120


def read_public_ids(path: str | Path) -> list[str]:
    """Public image ids, one per line (a first line ``imgId`` is a header); empty -> :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"public ids file not found: {path}")
    ids = [ln.strip().split(",")[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if ids and ids[0] == "imgId":
        ids = ids[1:]
    if not ids:
        raise ConfigError(f"{path} lists no public ids")
    return ids


def public_mask(ids: Sequence[str], public_ids: Sequence[str]) -> np.ndarray:
    """Boolean mask of ``ids`` that are public; ids outside the image set raise :class:`ConfigError`."""
    pos = {k: i for i, k in enumerate(ids)}
    unknown = [k for k in public_ids if k not in pos]
    if unknown:
        raise ConfigError(f"{len(unknown)} public ids are not in the scored image set, e.g. {unknown[:3]}")
    mask = np.zeros(len(ids), dtype=bool)
    mask[[pos[k] for k in public_ids]] = True
    return mask


def leaderboard(
    entries: Sequence[Entry],
    truth: Run | str | Path,
    splits: int = 1000,
    seed: int = 0,
    public_fraction: float = PUBLIC_FRACTION,
    public_ids: Sequence[str] | None = None,
    compare: tuple[str, str] | None = None,
    progress: bool = True,
    baseline: bool = False,
) -> LeaderboardResult:
    """Score ``entries`` against ``truth`` once per image and simulate ``splits`` public/private boards.

    ``public_ids``: fix the split (each board is then bootstrap-resampled ``splits`` times).
    ``compare``: two entry names (or unique parts) for a paired comparison.
    ``baseline``: when no entry is a mean-vector baseline (see :func:`experiments.entries.load_entries`),
    add the mean of this board's own prompts, labelled as such (in-sample: it has seen every answer).
    """
    truth_run = load_truth(truth)
    if baseline and entries and not any(e.predictor == BASELINE for e in entries):
        entries = [*entries, mean_vector_entry(truth_run.embeddings.mean(axis=0), "board",
                                               "this board's own prompts (in-sample: it has seen every answer)",
                                               entries[0])]
    scored = score_entries(entries, truth_run, progress=progress)
    mask = public_mask(scored.ids, public_ids) if public_ids is not None else None
    sim = simulate(scored.scores, [e.name for e in entries], splits, seed, public_fraction, mask, progress=progress)
    comparison = sim.compare(*compare) if compare else None
    truth_name = str(truth_run.path or truth_run.name) if isinstance(truth, Run) else str(truth)
    return LeaderboardResult(
        report.table_rows(sim, entries), sim, scored, list(entries), comparison, truth_name, public_fraction
    )


def record_result(result: LeaderboardResult, db: str | Path | None = None, out: str | Path | None = None) -> int:
    """Record the session and its entries in the experiment record (``db`` None: the default file); return its id."""
    from .. import (
        record,  # not at import time: ``python -m experiments.record`` must load it first
    )

    sim, scored = result.simulation, result.scored
    session = {
        "truth": result.truth, "n_images": len(scored.ids), "splits": sim.splits, "seed": sim.seed,
        "public_fraction": result.public_fraction, "fixed_split": int(sim.fixed_split),
        "out": str(out) if out is not None else None,
    }
    digest = dict(zip(sim.names, scored.digests))
    rows = [r | {"digest": digest[r["name"]]} for r in result.rows]
    return record.record_session(db, scored.image_set, session, rows)


def write_plots(result: LeaderboardResult, out: str | Path) -> dict[str, Path]:
    """Save the interval, public-vs-private, rank and per-image plots as PNGs in ``out``."""
    from promptblend.figures import save_figure

    sim, order, out = result.simulation, result.order, Path(out)
    best = order[0]
    figures = {
        "intervals": lambda: plots.intervals(sim, order, [e.tuning for e in result.entries]),
        "public_private": lambda: plots.public_private(sim, order),
        "ranks": lambda: plots.ranks(sim, order),
        "histogram": lambda: plots.histogram(result.scored.scores[best], sim.names[best]),
    }
    return {key: save_figure(make(), out / PLOT_FILES[key], dpi=PLOT_DPI) for key, make in figures.items()}


def write_summary(result: LeaderboardResult, path: str | Path, session_id: int | None = None) -> Path:
    """Write ``summary.json``: split settings, shake-up figures, the best entry, the comparison."""
    from promptblend.atomic import write_text

    sim = result.simulation
    summary = {
        "image_set": result.scored.image_set,
        "n_images": len(result.scored.ids),
        "n_public": sim.n_public,
        "splits": sim.splits,
        "seed": sim.seed,
        "fixed_split": sim.fixed_split,
        "p_leader_holds": sim.p_leader_holds(),
        "mean_abs_rank_change": float(sim.shakeup().mean()),
        "best": result.best,
        "comparison": result.comparison.as_dict() if result.comparison else None,
        "rank_distribution_private": {n: d.tolist() for n, d in zip(sim.names, sim.rank_distribution("private"))},
        "session_id": session_id,
    }
    write_text(path, json.dumps(summary, indent=2))
    return Path(path)


def write_html(
    result: LeaderboardResult, path: str | Path, images: dict[str, Path] | None = None, history: Sequence[dict] = ()
) -> Path:
    """Write ``leaderboard.html``: one self-contained page (table, plots, tuning honesty, history)."""
    return pages.leaderboard_page(result, images or {}, history).write(path)


def write_outputs(
    result: LeaderboardResult,
    out: str | Path,
    with_plots: bool = True,
    history: Sequence[dict] = (),
    session_id: int | None = None,
) -> dict[str, Path]:
    """Write ``leaderboard.csv``, the plots (when ``with_plots``), ``summary.json`` and ``leaderboard.html`` to ``out``.

    ``history``: the record's rows for this image set (shown on the page); ``session_id``: the
    record's session, kept in ``summary.json``.
    """
    out = Path(out)
    files = {"csv": report.write_csv(result.rows, out / "leaderboard.csv")}
    if with_plots:
        files.update(write_plots(result, out))
    files["summary"] = write_summary(result, out / "summary.json", session_id)
    files["html"] = write_html(result, out / "leaderboard.html", files, history)
    return files
