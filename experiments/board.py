"""The leaderboard API: score entries once per image, simulate the boards, report, record.

``leaderboard(entries, truth, out)`` is what ``python -m experiments.leaderboard`` calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend.errors import ConfigError
from promptblend.runs import Run
from promptblend.truth import load_truth

from . import plots, record, report
from .entries import Entry, Scored, score_entries
from .simulate import PUBLIC_FRACTION, Comparison, Simulation, simulate


@dataclass
class LeaderboardResult:
    """Everything a leaderboard run produced: rows (best first), the simulation, files written."""

    rows: list[dict]
    simulation: Simulation
    scored: Scored
    entries: list[Entry]
    comparison: Comparison | None = None
    history: list[dict] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    session_id: int | None = None

    @property
    def best(self) -> str:
        """Name of the entry with the highest whole-set score."""
        return self.rows[0]["name"]



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
    out: str | Path | None = None,
    splits: int = 1000,
    seed: int = 0,
    public_fraction: float = PUBLIC_FRACTION,
    public_ids: Sequence[str] | None = None,
    compare: tuple[str, str] | None = None,
    record_path: str | Path | bool = True,
    make_plots: bool = True,
    progress: bool = True,
    console=None,
    quiet: bool = False,
) -> LeaderboardResult:
    """Score ``entries`` against ``truth``, simulate the boards, write reports to ``out``, record it.

    ``record_path``: True = the default record file, False = do not record, or a path.
    ``public_ids``: fix the split (each board is then bootstrap-resampled ``splits`` times).
    Files in ``out`` (when given): ``leaderboard.csv``, ``summary.json``, ``intervals.png``,
    ``public_private.png``, ``ranks.png``, ``per_image_hist.png``.
    """
    truth_run = load_truth(truth)
    scored = score_entries(entries, truth_run, progress=progress)
    mask = public_mask(scored.ids, public_ids) if public_ids is not None else None
    sim = simulate(scored.scores, [e.name for e in entries], splits, seed, public_fraction, mask, progress=progress)
    rows = report.table_rows(sim, entries)
    comparison = sim.compare(*compare) if compare else None
    result = LeaderboardResult(rows, sim, scored, list(entries), comparison)
    if out is not None:
        out = Path(out)
        result.files["csv"] = report.write_csv(rows, out / "leaderboard.csv")
        if make_plots:
            result.files.update(_write_plots(result, out))
    if record_path is not False:
        db = None if record_path is True else Path(record_path)
        truth_name = str(truth_run.path or truth_run.name) if isinstance(truth, Run) else str(truth)
        _record(result, db, truth_name, public_fraction, out)
    if out is not None:
        result.files["summary"] = _write_summary(result, out / "summary.json")
    if not quiet:
        console = console or report.make_console()
        report.print_report(rows, sim, comparison, result.history, console)
        if result.files:
            console.print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return result


def _write_plots(result: LeaderboardResult, out: Path) -> dict[str, Path]:
    sim = result.simulation
    order = [sim.names.index(r["name"]) for r in result.rows]
    best = order[0]
    return {
        "intervals": plots.plot_intervals(sim, order, [e.tuning for e in result.entries], out / "intervals.png"),
        "public_private": plots.plot_public_private(sim, order, out / "public_private.png"),
        "ranks": plots.plot_ranks(sim, order, out / "ranks.png"),
        "histogram": plots.plot_histogram(result.scored.scores[best], sim.names[best], out / "per_image_hist.png"),
    }


def _record(result: LeaderboardResult, db: Path | None, truth: str, public_fraction: float, out: Path | None) -> None:
    """Write the session and its entries to the record, then read back this image set's history."""
    sim, scored = result.simulation, result.scored
    session = {
        "truth": truth, "n_images": len(scored.ids), "splits": sim.splits, "seed": sim.seed,
        "public_fraction": public_fraction, "fixed_split": int(sim.fixed_split), "out": str(out) if out else None,
    }
    digest = dict(zip(sim.names, scored.digests))
    rows = [r | {"digest": digest[r["name"]]} for r in result.rows]
    result.session_id = record.record_session(db, scored.image_set, session, rows)
    result.history = record.history(db, scored.image_set)
    result.files["record"] = db if db is not None else record.default_path()


def _write_summary(result: LeaderboardResult, path: Path) -> Path:
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
        "session_id": result.session_id,
    }
    write_text(path, json.dumps(summary, indent=2))
    return path
