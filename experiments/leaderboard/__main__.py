"""Offline leaderboard: ``python -m experiments.leaderboard --runs RUNS --truth PROMPTS_CSV [--out DIR]``.

Scores every run, tuned blend and submission once per image, simulates many public/private splits
(20% / 80%, seeded) as matrix work, and reports intervals, rank distributions, P(rank 1), the
expected shake-up, paired comparisons and tuning honesty; records everything in the experiment record
and writes ``leaderboard.csv``, ``summary.json``, PNG plots and a self-contained ``leaderboard.html``.
"""

from __future__ import annotations

import argparse

from promptblend.cli import entry_point
from promptblend.errors import ConfigError

from .. import record, report
from ..entries import load_entries
from ..simulate import PUBLIC_FRACTION
from . import leaderboard, read_public_ids, record_result, write_outputs


def _named_submission(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CSV, got '{text}'")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    """The leaderboard's arguments."""
    ap = argparse.ArgumentParser(prog="python -m experiments.leaderboard", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", action="append", default=[], metavar="RUNS",
                    help="folder of runs and tuned blends (best.json + submission.csv); repeatable")
    ap.add_argument("--truth", required=True, help="prompts.csv (imgId,prompt), an image set with prompts (folder or WebDataset shards) or a truth run folder")
    ap.add_argument("--out", default="leaderboard", help="output folder (default ./leaderboard)")
    ap.add_argument("--blend", action="append", default=[], metavar="DIR", help="a tuned-blend folder; repeatable")
    ap.add_argument("--submission", action="append", default=[], type=_named_submission, metavar="NAME=CSV",
                    help="an outside Kaggle submission; repeatable")
    ap.add_argument("--bank", metavar="DIR", help="prompt-bank folder whose mean prompt is the mean-vector baseline "
                    "(default: the --blend's mean vector, else this board's prompts)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired comparison of two entries (name or unique part)")
    ap.add_argument("--public-ids", metavar="FILE", help="fixed public split: one image id per line")
    ap.add_argument("--splits", type=int, default=1000, help="simulated splits / resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--public-fraction", type=float, default=PUBLIC_FRACTION, help="public share (default 0.2)")
    ap.add_argument("--record", default=None, metavar="FILE", help=f"experiment record (default {record.default_path()})")
    ap.add_argument("--no-record", action="store_true", help="do not write the experiment record")
    ap.add_argument("--no-plots", action="store_true", help="no PNG plots (the page then has none either)")
    return ap


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point: compute, record, write the files, print."""
    args = build_parser().parse_args(argv)
    names = [n for n, _ in args.submission]
    if len(set(names)) != len(names):
        raise ConfigError(f"--submission names repeat: {names}")
    entries = load_entries(args.runs, args.blend, dict(args.submission), bank=args.bank)
    result = leaderboard(
        entries,
        args.truth,
        splits=args.splits,
        seed=args.seed,
        public_fraction=args.public_fraction,
        public_ids=read_public_ids(args.public_ids) if args.public_ids else None,
        compare=tuple(args.compare) if args.compare else None,
        baseline=True,
    )
    session_id, history = None, []
    if not args.no_record:
        session_id = record_result(result, args.record, args.out)
        history = record.history(args.record, result.scored.image_set)
    files = write_outputs(result, args.out, with_plots=not args.no_plots, history=history, session_id=session_id)
    console = report.make_console()
    report.print_report(result.rows, result.simulation, result.comparison, history, console)
    for e in result.entries:
        if e.kind == "baseline":
            console.print(f"{e.name}: the mean of {e.meta['mean_source']}, the same vector for every image")
    console.print("wrote " + ", ".join(str(p) for p in files.values()))
    if session_id is not None:
        console.print(f"recorded session {session_id} in {args.record or record.default_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
