"""Whole ``ensemble.tune`` vs the same Optuna studies with a zero-cost objective, in one process.

``python benchmarks/bench_tune.py [--n 16000] [--k 8] [--folds 5] [--trials 500]``
Runs the 5 fold studies + the final study (500 TPE trials each, default SQLite storage) twice:
once with a zero-cost objective (same names, sampler, seeds, storage kind, warm-start trial), once
as the full tuner (statistics, FAISS groups, gradient optima, the studies, scoring, submission,
plots). Prints both wall times and the ratio (goal <= 1.3x) and the tuned result's distance to the
gradient optimum (goal <= 1e-5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def zero_cost_studies(out: Path, names: list[str], folds: int, trials: int, seed: int) -> float:
    """The tuner's studies with an objective that costs nothing; returns wall seconds."""
    from threadpoolctl import threadpool_limits

    from ensemble import search
    from ensemble.tune import BlendSpace, SearchSettings

    studies = [f"blend-fold{f}" for f in range(folds)] + ["blend-final"]
    space = BlendSpace.of(names, True, None)
    t = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        settings = SearchSettings(search.storage_spec(None, out), "tpe", seed)
        warm = np.r_[np.ones(len(names)), 0.5]
        for name in studies:
            st = search.open_study(settings.spec, name)
            search.enqueue_warm_start(st, space.params(warm, True))
        for i, name in enumerate(studies):
            st = search.open_study(settings.spec, name)

            def objective(trial) -> float:
                c, _ = space.suggest(trial)
                return -float(((c - 0.5) ** 2).sum())

            search.run_study(st, objective, trials, sampler_for=settings.sampler_for(i))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import optuna

    from ensemble.synthetic import synthetic_problem
    from ensemble.tune import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs, truth = synthetic_problem(args.n, args.k, seed=args.seed)
    names = [r.name for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        base = zero_cost_studies(Path(tmp) / "zero", names, args.folds, args.trials, args.seed)
        t = time.perf_counter()
        result = tune(runs, truth, Path(tmp) / "tune", trials=args.trials, folds=args.folds, seed=args.seed,
                      progress=False, report=False)
        full = time.perf_counter() - t
    n_studies = args.folds + 1
    print(f"N={args.n} K={args.k}: {n_studies} studies x {args.trials} TPE trials, SQLite storage")
    print(f"zero-cost objective, same studies: {base:.1f} s")
    print(f"ensemble.tune end to end: {full:.1f} s")
    print(f"ratio: {full / base:.2f}x (goal <= 1.3x)")
    tm = result.timings
    print(f"  tune breakdown: statistics + FAISS groups {tm['prepare_s']:.1f} s, gradient optima + studies "
          f"{tm['studies_s']:.1f} s, scoring + submission.csv + plots {tm['outputs_s']:.1f} s")
    print(f"in-sample {result.in_sample:.6f}, out-of-fold {result.out_of_fold:.6f}, "
          f"gradient optimum {result.gradient_optimum:.6f}")
    print(f"tuned result - gradient optimum: {result.in_sample - result.gradient_optimum:+.2e} (goal within 1e-5); "
          f"best searched trial (no warm start) - optimum: {-(result.search_gap or 0):+.2e}")


if __name__ == "__main__":
    main()
