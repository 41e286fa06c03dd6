"""HTML pages of the leaderboard and of the experiment record, built with :mod:`promptblend.page`.

``leaderboard_page`` is what ``leaderboard.html`` holds: the Kaggle-style table (sortable by any
column), the interval and shake-up plots, tuning honesty for blends and this image set's recorded
history. ``record_page`` renders the whole record (``python -m experiments.record --html OUT``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from promptblend import __version__
from promptblend.page import Cell, Column, Page

if TYPE_CHECKING:
    from .board import LeaderboardResult

PLOTS = (
    ("intervals", "Scores, bootstrap intervals and private-board ranges; right: gap to the leader"),
    ("public_private", "Public vs private score over the simulated splits"),
    ("ranks", "Private-board rank distribution"),
    ("histogram", "Per-image scores of the best entry"),
)
#: Plots wider than this (px) get a row of their own and never shrink below it: a phone scrolls them sideways.
WIDE_PLOT_PX = 900
TUNING_TEXT = (
    "In-sample is a tuned blend's score on the images its weights were fitted on; out-of-fold is the "
    "cross-validated score on images each fold's weights never saw. The gap is over-fitting: on unseen "
    "images expect about the out-of-fold score. 'Scored here' is this board's score (in-sample when the "
    "blend was tuned on these images)."
)


def _interval(lo: float | None, hi: float | None, digits: int = 4) -> Cell | None:
    """'lo–hi' text that sorts by its lower end."""
    if lo is None or hi is None:
        return None
    return Cell(f"{lo:.{digits}f}–{hi:.{digits}f}", sort=lo)


def _when(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ")


def _footer() -> str:
    return f"written by promptblend {__version__} at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _board_columns(tuned: bool) -> list[Column]:
    cols = [
        Column("rank", "#"), Column("name", "entry"), Column("kind"),
        Column("score", fmt=".5f", tip="mean cosine over all images"),
        Column("public_mean", "public", fmt=".5f", tip="mean public-board score over the simulated splits"),
        Column("private_mean", "private", fmt=".5f", tip="mean private-board score over the simulated splits"),
        Column("interval", "95% interval", tip="bootstrap interval of the score; sorts by its lower end"),
        Column("p_first_private", "P(1st)", fmt=".3f", tip="probability of rank 1 on the private board"),
        Column("rank_spread", "rank spread", tip="central 95% range of the private rank; sorts by the mean rank"),
        Column("shakeup", "E|Δrank|", fmt=".2f", tip="expected |private rank - public rank|"),
    ]
    if tuned:
        cols += [Column("in_sample", "in-sample", fmt=".5f"), Column("out_of_fold", "out-of-fold", fmt=".5f"),
                 Column("overfit", fmt="+.5f", tip="in-sample minus out-of-fold")]
    return cols + [Column("predictor", wrap=True)]


def board_rows(result: LeaderboardResult) -> list[dict]:
    """The page's table rows (best first): the CSV's numbers plus interval and rank-spread cells."""
    sim = result.simulation
    a = (1 - sim.level) / 2
    low, high = np.quantile(sim.ranks("private"), [a, 1 - a], axis=0, method="nearest")
    out = []
    for r in result.rows:
        i = sim.names.index(r["name"])
        spread = f"{int(low[i])}" if low[i] == high[i] else f"{int(low[i])}–{int(high[i])}"
        out.append(r | {"interval": _interval(r["ci_low"], r["ci_high"]),
                        "rank_spread": Cell(spread, sort=r["mean_private_rank"])})
    return out


def leaderboard_page(result: LeaderboardResult, images: Mapping[str, Path], history: Sequence[dict] = ()) -> Page:
    """The leaderboard as one self-contained page.

    ``images``: written files by key (the plots among them are embedded); ``history``: the record's rows.
    """
    sim = result.simulation
    how = f"fixed split, {sim.splits} bootstrap resamples" if sim.fixed_split else f"{sim.splits} random splits"
    page = Page(
        f"Leaderboard: {result.best} leads",
        subtitle=f"{sim.n_public + sim.n_private} images ({sim.n_public} public / {sim.n_private} private), {how}; "
        f"truth {result.truth}; image set {result.scored.image_set}",
        footer=_footer(),
    )
    page.facts({
        "entries": len(result.rows), "best entry": result.best, "best score": result.rows[0]["score"],
        "P(public leader wins private)": sim.p_leader_holds(),
        "expected |rank change| public → private": float(sim.shakeup().mean()),
    })
    page.section("Leaderboard")
    tuned = any(r["in_sample"] is not None for r in result.rows)
    page.table(_board_columns(tuned), board_rows(result), name="leaderboard", pin=2,
               caption="Click a header to sort by it, again to reverse; hover it for what the column means.")
    if result.comparison is not None:
        c = result.comparison
        page.text(
            f"{c.a} vs {c.b}: difference {c.diff:+.5f}, paired-bootstrap interval [{c.ci[0]:+.5f}, {c.ci[1]:+.5f}]; "
            f"P({c.a} beats {c.b}) private {c.p_a_wins_private:.3f}, public {c.p_a_wins_public:.3f}."
        )
    plots = {key: images[key] for key, _ in PLOTS if key in images}
    if plots:
        _plots_section(page, plots)
    if tuned:
        _tuning_section(page, result)
    page.section("History of this image set")
    if history:
        history_tables(page, history)
    else:
        page.text("This leaderboard was not recorded in the experiment record: no history to show.", muted=True)
    return page


def _png_width(path: Path) -> int:
    """Pixel width from a PNG's header (0 when the file is not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big") if head.startswith(b"\x89PNG\r\n\x1a\n") else 0


def _plots_section(page: Page, images: Mapping[str, Path]) -> None:
    """Wide plots (many entries) across the page, scrolling sideways on a phone; the others side by side."""
    page.section("Intervals and shake-up")
    narrow = []
    for key, text in PLOTS:
        if key not in images:
            continue
        if _png_width(images[key]) > WIDE_PLOT_PX:
            page.image(images[key], text, text, min_width=WIDE_PLOT_PX)
        else:
            narrow.append((images[key], text, text))
    if narrow:
        page.images(narrow)


def _tuning_section(page: Page, result: LeaderboardResult) -> None:
    page.section("Tuning honesty")
    page.text(TUNING_TEXT)
    tuning = {e.name: e.tuning or {} for e in result.entries}
    rows = [
        r | {"fold_std": tuning[r["name"]].get("fold_std")} for r in result.rows if r["in_sample"] is not None
    ]
    cols = [Column("name", "blend"), Column("in_sample", "in-sample", fmt=".5f"),
            Column("out_of_fold", "out-of-fold", fmt=".5f"), Column("overfit", fmt="+.5f"),
            Column("score", "scored here", fmt=".5f")]
    if any(r["fold_std"] is not None for r in rows):
        cols.append(Column("fold_std", "fold score sd", fmt=".5f", tip="spread of the fold scores"))
    page.table(cols, rows, name="tuning", pin=1)


def best_per_day(history: Sequence[dict]) -> list[dict]:
    """Per day (UTC, by first scoring): the best entry first scored that day, and the best so far."""
    days: dict[str, list[dict]] = defaultdict(list)
    for r in history:
        if r["score"] is not None:
            days[(r["first_seen"] or "")[:10]].append(r)
    out, running = [], -np.inf
    for day in sorted(days):
        top = max(days[day], key=lambda r: r["score"])
        running = max(running, top["score"])
        out.append({"day": day, "name": top["name"], "kind": top["kind"], "score": top["score"],
                    "best_so_far": running, "new": len(days[day])})
    return out


def history_tables(page: Page, history: Sequence[dict], with_set: bool = False) -> None:
    """'Best per day' and 'every entry ever scored' tables of recorded entries (best marked bold)."""
    page.table(
        [Column("day"), Column("name", "best entry that day"), Column("kind"), Column("score", fmt=".5f"),
         Column("best_so_far", "best so far", fmt=".5f"), Column("new", "entries first scored")],
        best_per_day(history), caption="Best per day", pin=1,
    )
    rows = [
        r | {"interval": _interval(r["ci_low"], r["ci_high"]), "first": _when(r["first_seen"]),
             "last": _when(r["last_seen"])}
        for r in history
    ]
    cols = [Column("image_set", "image set")] if with_set else []
    cols += [
        Column("name", "entry"), Column("kind"), Column("predictor"), Column("score", fmt=".5f"),
        Column("interval", "95% interval"), Column("p_first_private", "P(1st)", fmt=".3f"),
        Column("in_sample", "in-sample", fmt=".5f"), Column("out_of_fold", "out-of-fold", fmt=".5f"),
        Column("first", "first scored"), Column("last", "last scored"), Column("times_seen", "times"),
    ]
    marked = [i for i, r in enumerate(history) if r.get("best")]
    page.table(cols, rows, caption=f"Every entry ever scored ({len(rows)}; best in bold)", pin=1 + with_set,
               marked=marked)


def record_page(history: Sequence[dict], sessions: Sequence[dict], source: str) -> Page:
    """The whole experiment record: per image set its best per day and every entry, then all sessions."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in history:
        by_set[r["image_set"]].append(r)
    page = Page("Experiment record", subtitle=str(source), footer=_footer())
    page.facts({
        "image sets": len(by_set), "entries": len(history), "sessions": len(sessions),
        "first session": _when(sessions[0]["created"]) if sessions else "-",
        "last session": _when(sessions[-1]["created"]) if sessions else "-",
    })
    n_sessions = defaultdict(int)
    for s in sessions:
        n_sessions[s["image_set"]] += 1
    for key, rows in by_set.items():
        page.section(f"Image set {key}")
        best = rows[0]
        page.text(f"{len(rows)} entries over {n_sessions[key]} sessions; best: {best['name']} "
                  f"({best['score']:.5f}).")
        history_tables(page, rows)
    page.section("Sessions")
    page.table(
        [Column("id", "#"), Column("created"), Column("image_set", "image set"), Column("truth", wrap=True),
         Column("n_images", "images"), Column("splits"), Column("seed"), Column("fixed_split", "fixed split"),
         Column("out", wrap=True), Column("host")],
        [s | {"created": _when(s["created"]), "fixed_split": "yes" if s["fixed_split"] else "no"} for s in sessions],
        name="sessions",
    )
    return page
