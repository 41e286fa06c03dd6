"""Offline leaderboard: ``python -m experiments.leaderboard --runs RUNS --truth PROMPTS_CSV [--out DIR]``.

Scores every run, tuned blend and submission once per image, simulates many public/private splits
(20% / 80%, seeded) as matrix work, and reports intervals, rank distributions, P(rank 1), the
expected shake-up, paired comparisons and tuning honesty; records everything in the experiment record.
The Python API lives here too: ``from experiments.leaderboard import leaderboard, LeaderboardResult``.
"""

from __future__ import annotations

import argparse

from promptblend.cli import entry_point
from promptblend.errors import ConfigError

from . import record
from .board import LeaderboardResult, leaderboard, read_public_ids
from .entries import load_entries
from .simulate import PUBLIC_FRACTION

__all__ = ["LeaderboardResult", "leaderboard", "main"]


def _named_submission(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CSV, got '{text}'")
    return name, path


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m experiments.leaderboard", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", action="append", default=[], metavar="RUNS",
                    help="folder of runs and tuned blends (best.json + submission.csv); repeatable")
    ap.add_argument("--truth", required=True, help="prompts.csv (imgId,prompt) or a truth run folder")
    ap.add_argument("--out", default="leaderboard", help="output folder (default ./leaderboard)")
    ap.add_argument("--blend", action="append", default=[], metavar="DIR", help="a tuned-blend folder; repeatable")
    ap.add_argument("--submission", action="append", default=[], type=_named_submission, metavar="NAME=CSV",
                    help="an outside Kaggle submission; repeatable")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired comparison of two entries (name or unique part)")
    ap.add_argument("--public-ids", metavar="FILE", help="fixed public split: one image id per line")
    ap.add_argument("--splits", type=int, default=1000, help="simulated splits / resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--public-fraction", type=float, default=PUBLIC_FRACTION, help="public share (default 0.2)")
    ap.add_argument("--record", default=None, metavar="FILE", help=f"experiment record (default {record.default_path()})")
    ap.add_argument("--no-record", action="store_true", help="do not write the experiment record")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n, _ in args.submission]
    if len(set(names)) != len(names):
        raise ConfigError(f"--submission names repeat: {names}")
    entries = load_entries(args.runs, args.blend, dict(args.submission))
    leaderboard(
        entries,
        args.truth,
        out=args.out,
        splits=args.splits,
        seed=args.seed,
        public_fraction=args.public_fraction,
        public_ids=read_public_ids(args.public_ids) if args.public_ids else None,
        compare=tuple(args.compare) if args.compare else None,
        record_path=False if args.no_record else (args.record or True),
        make_plots=not args.no_plots,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
