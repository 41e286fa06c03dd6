"""The leaderboard table: one row per entry, printed with rich and written as ``leaderboard.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .entries import Entry
from .simulate import Comparison, Simulation, ranks

COLUMNS = (
    "rank", "name", "kind", "score", "ci_low", "ci_high", "public_mean", "public_low", "public_high",
    "private_mean", "private_low", "private_high", "p_first_public", "p_first_private", "mean_private_rank",
    "rank_shift", "shakeup", "in_sample", "out_of_fold", "overfit", "predictor", "config_hash", "fingerprint",
    "wall_time_s", "created", "source", "n_images",
)


def table_rows(sim: Simulation, entries: Sequence[Entry]) -> list[dict]:
    """Leaderboard rows sorted by whole-set score (best first); equal scores share a rank."""
    lo, hi = sim.ci()
    publo, pubhi = sim.board_range("public")
    prlo, prhi = sim.board_range("private")
    pub1, priv1 = sim.p_first("public"), sim.p_first("private")
    mean_rank = sim.ranks("private").mean(axis=0)
    shift, shake = sim.rank_shift(), sim.shakeup()
    n = sim.n_public + sim.n_private
    rows = []
    for i, e in enumerate(entries):
        t = e.tuning or {}
        rows.append({
            "name": e.name, "kind": e.kind, "score": sim.full[i], "ci_low": lo[i], "ci_high": hi[i],
            "public_mean": sim.public[:, i].mean(), "public_low": publo[i], "public_high": pubhi[i],
            "private_mean": sim.private[:, i].mean(), "private_low": prlo[i], "private_high": prhi[i],
            "p_first_public": pub1[i], "p_first_private": priv1[i], "mean_private_rank": mean_rank[i],
            "rank_shift": shift[i], "shakeup": shake[i], "in_sample": t.get("in_sample"),
            "out_of_fold": t.get("out_of_fold"), "overfit": t.get("overfit"), "predictor": e.predictor,
            "config_hash": e.config_hash, "fingerprint": e.fingerprint, "wall_time_s": e.wall_time_s,
            "created": e.created, "source": str(e.source) if e.source else None, "n_images": n,
        })
    order = np.argsort(-sim.full, kind="stable")
    rank = ranks(sim.full[None, :])[0]
    return [{k: _py(v) for k, v in ({"rank": rank[i]} | rows[i]).items()} for i in order]


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """Write the rows as ``leaderboard.csv`` (atomic)."""
    import pandas as pd

    from promptblend.atomic import atomic_path

    with atomic_path(path, ".csv") as tmp:
        pd.DataFrame(list(rows), columns=list(COLUMNS)).to_csv(tmp, index=False, float_format="%.6f")
    return path


def _f(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def make_console():
    """A rich console; when output is not a terminal, wide enough that tables do not wrap."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 150))


def print_report(
    rows: Sequence[dict], sim: Simulation, comparison: Comparison | None, history: Sequence[dict], console=None
) -> None:
    """Print the leaderboard, the shake-up summary, a paired comparison and the recorded history."""
    from rich.table import Table

    console = console or make_console()
    pct = int(round(sim.level * 100))
    how = (
        f"fixed split, boards bootstrap-resampled {sim.splits} times"
        if sim.fixed_split
        else f"{sim.splits} random splits"
    )
    table = Table(title=f"Leaderboard: {sim.n_public + sim.n_private} images, {sim.n_public} public / {sim.n_private} private, {how}")
    cols = ("#", "entry", "kind", "score", f"{pct}% CI", f"private {pct}% range", "P(#1 priv)",
            "mean priv rank", "E|Δrank|", "in-sample", "OOF", "overfit")
    name_width = min(40, max((len(r["name"]) for r in rows), default=5))  # short run names stay on one line
    for c in cols:
        left = c in ("entry", "kind")
        table.add_column(c, justify="left" if left else "right", overflow="fold", no_wrap=not left,
                         min_width=name_width if c == "entry" else None)
    any_tuned = any(r["in_sample"] is not None for r in rows)
    for r in rows:
        table.add_row(
            str(r["rank"]), r["name"], r["kind"], _f(r["score"], 5), f"{_f(r['ci_low'])}–{_f(r['ci_high'])}",
            f"{_f(r['private_low'])}–{_f(r['private_high'])}", _f(r["p_first_private"], 3),
            _f(r["mean_private_rank"], 2), _f(r["shakeup"], 2), _f(r["in_sample"]), _f(r["out_of_fold"]),
            _f(r["overfit"]),
        )
    if not any_tuned:
        table.columns = table.columns[:-3]
    console.print(table)
    console.print(
        f"P(public leader also wins private) = {sim.p_leader_holds():.3f}; "
        f"expected |rank change| public -> private = {float(sim.shakeup().mean()):.2f} places"
    )
    for r in rows:
        if r["overfit"] is not None:
            console.print(
                f"tuning honesty, {r['name']}: in-sample {r['in_sample']:.5f} vs out-of-fold {r['out_of_fold']:.5f} "
                f"-> {r['overfit']:+.5f} of the in-sample score is over-fitting; on unseen images expect about "
                f"{r['out_of_fold']:.5f} (scored here {r['score']:.5f}: in-sample if it was tuned on these images)"
            )
    if comparison is not None:
        c = comparison
        console.print(
            f"{c.a} vs {c.b}: difference {c.diff:+.5f}, paired-bootstrap {pct}% interval "
            f"[{c.ci[0]:+.5f}, {c.ci[1]:+.5f}]; P({c.a} beats {c.b}) private {c.p_a_wins_private:.3f}, "
            f"public {c.p_a_wins_public:.3f}; private difference {pct}% range "
            f"[{c.private_diff_range[0]:+.5f}, {c.private_diff_range[1]:+.5f}]"
        )
    if history:
        tuned = any(r["in_sample"] is not None for r in history)
        h = Table(title=f"History of this image set ({len(history)} recorded entries, * = best)")
        cols = ["", "entry", "kind", "predictor", "score"] + (["in-sample", "OOF"] if tuned else []) + ["seen", "last seen"]
        for c in cols:
            h.add_column(c, justify="left" if c in ("entry", "kind", "predictor", "last seen") else "right")
        for r in history:
            cells = ["*" if r["best"] else "", r["name"], r["kind"], r["predictor"] or "", _f(r["score"], 5)]
            cells += [_f(r["in_sample"]), _f(r["out_of_fold"])] if tuned else []
            h.add_row(*cells, str(r["times_seen"]), r["last_seen"][:16].replace("T", " "))
        console.print(h)
