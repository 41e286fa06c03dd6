"""Tune an Optuna blend of runs with grouped nested CV: ``python -m ensemble.tune --runs RUNS --truth CSV``.

With no ``--runs`` it runs the built-in demo end to end. Outputs in ``--out``: best.json,
mean_vector.npy, submission.csv, folds.csv, history.png, weights.png, folds.png, report.html and
(by default) optuna.db.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from promptblend import atomic
from promptblend.cli import entry_point
from promptblend.errors import ConfigError

from .. import report
from ..search import list_samplers
from . import load_runs, load_truth, tune


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept apart so --help can be tested)."""
    ap = argparse.ArgumentParser(prog="python -m ensemble.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", help="run folders, or folders holding runs (none: run the built-in demo)")
    ap.add_argument("--truth", help="prompts.csv (imgId,prompt), an image set with prompts (folder or WebDataset shards) or a truth run folder")
    ap.add_argument("--trials", type=int, help="trials per study (default 500; the demo picks its own)")
    ap.add_argument("--folds", type=int, default=5, help="outer CV folds grouped by prompt similarity; 0 skips CV")
    ap.add_argument("--sampler", default="tpe", choices=list_samplers(), help="Optuna sampler (default tpe)")
    ap.add_argument("--storage", help="sqlite:///FILE, FILE.journal or postgresql://... (default: SQLite in --out)")
    ap.add_argument("--study", default="blend", help="study name prefix; reuse it to resume or to join from another host")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on the studies (several need a journal or PostgreSQL)")
    ap.add_argument("--out", default="tune-out", help="output folder (default ./tune-out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--intersect", action="store_true", help="use the ids all runs and the truth share")
    ap.add_argument("--mean", default="truth", choices=["truth", "bank", "none"], help="mean vector source")
    ap.add_argument("--index", help="prompt-bank index folder: enables snap-to-bank (and --mean bank)")
    ap.add_argument("--normalise", default="search", choices=["search", "on", "off"], help="per-run L2 normalisation")
    ap.add_argument("--group-threshold", type=float, default=0.7, help="prompt cosine at which images may share a CV group (groups never chain; >= 0.9: always together)")
    ap.add_argument("--test-runs", nargs="+", help="runs of a test image set to write submission.csv for")
    ap.add_argument("--time-budget", help="inference time allowed on the test set, e.g. 9h or 90m: keep the predictor subset "
                    "with the best out-of-fold score whose projected time fits (seconds per image from each run's meta.json)")
    ap.add_argument("--test-images", type=int, default=16000, help="test images the --time-budget projection is for (default 16000)")
    ap.add_argument("--heartbeat", type=int, default=10, help="seconds between worker heartbeats (PostgreSQL)")
    ap.add_argument("--no-warm-start", action="store_true",
                    help="do not enqueue the gradient optimum as each study's first trial (the search alone)")
    ap.add_argument("--no-report", action="store_true", help="no plots and no report.html")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def _demo(args: argparse.Namespace) -> None:
    """The no-argument fallback: the built-in demo (the one import of ``experiments`` from ``ensemble``)."""
    try:
        from experiments.demo import run_demo
    except ImportError as e:
        raise ConfigError(f"the built-in demo (experiments.demo) is not available: {e}; pass --runs and --truth") from e
    kwargs = {"trials": args.trials} if args.trials else {}
    run_demo(out=Path(args.out), seed=args.seed, progress=not args.no_progress, **kwargs)


def _holds_a_study(out: Path) -> bool:
    return any(out.glob("optuna.*"))


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    if not args.runs:
        _demo(args)
        return 0
    if not args.truth:
        raise ConfigError("--truth is required with --runs")
    # a failed tuning leaves its study (to resume) or no folder at all
    with atomic.output_folder(args.out, _holds_a_study):
        result = tune(
            load_runs(args.runs),
            load_truth(args.truth),
            args.out,
            trials=args.trials or 500,
            folds=args.folds,
            sampler=args.sampler,
            storage=args.storage,
            study=args.study,
            workers=args.workers,
            seed=args.seed,
            mean_vector=args.mean,
            normalise={"search": None, "on": True, "off": False}[args.normalise],
            index=args.index,
            intersect=args.intersect,
            group_threshold=args.group_threshold,
            test_runs=load_runs(args.test_runs) if args.test_runs else None,
            heartbeat=args.heartbeat,
            progress=not args.no_progress,
            report=not args.no_report,
            warm_start=not args.no_warm_start,
            time_budget=args.time_budget,
            test_images=args.test_images,
        )
    report.print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
