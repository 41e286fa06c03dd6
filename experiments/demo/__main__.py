"""``python -m experiments.demo``: the built-in demo (also what ``python -m ensemble.tune`` runs bare)."""

from __future__ import annotations

import argparse

from promptblend.cli import entry_point


def build_parser() -> argparse.ArgumentParser:
    """The demo's arguments."""
    from .pipeline import SIZES, default_threads

    ap = argparse.ArgumentParser(
        prog="python -m experiments.demo",
        description="Run promptblend end to end on a small offline task: train, predict, index, tune, score.",
    )
    ap.add_argument("--out", default="demo-out", help="report folder: tables, plots, submission (default ./demo-out)")
    ap.add_argument("--size", default="full", choices=sorted(SIZES), help="full (2,000 pairs) or small (400, for tests)")
    ap.add_argument("--bank", nargs="+", action="extend", default=[], metavar="FILE",
                    help="extra prompt bank(s) for the kNN index (txt, txt.gz, csv, parquet, jsonl)")
    ap.add_argument("--cache", help="where data, models, runs and the index are kept (default $PROMPTBLEND_CACHE/demo)")
    ap.add_argument("--trials", type=int, help="Optuna trials per study (default: the size's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the task, the models and the tuning")
    ap.add_argument("--threads", type=int, help=f"torch threads (default {default_threads()})")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 1 when the blend does not beat every predictor on the test split."""
    from .pipeline import run_demo

    args = build_parser().parse_args(argv)
    result = run_demo(
        out=args.out, size=args.size, bank=args.bank, cache=args.cache, trials=args.trials, seed=args.seed,
        threads=args.threads, progress=not args.quiet,
    )
    return 0 if result.blend_beats_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
