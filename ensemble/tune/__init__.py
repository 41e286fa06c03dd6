"""Tune a blend: nested grouped CV over Optuna studies, a final study on all data, the gradient check.

``tune`` is a plan of four stages: build the CV plan (:mod:`.plan`), run the studies
(:mod:`.studies`), evaluate their best trials (:mod:`.evaluate`), write the outputs (:mod:`.outputs`).
The command line (``python -m ensemble.tune``) is :mod:`ensemble.tune.__main__`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend.errors import BlendError, ConfigError
from promptblend.runs import Run
from promptblend.truth import load_truth

from .. import search
from ..align import align, load_runs
from ..budget import choose_under_budget
from ..space import BlendSpace
from .evaluate import evaluate
from .outputs import save_best, withdraw_best, write_outputs
from .plan import CvPlan, Job, build_plan
from .result import TuneResult
from .studies import Optimum, SearchSettings, one_blas_thread, run_studies, run_worker

__all__ = [
    "tune", "TuneResult", "load_runs", "load_truth", "BlendSpace", "CvPlan", "Job", "Optimum",
    "SearchSettings", "build_plan", "run_studies", "run_worker", "evaluate", "output_folder",
]


def output_folder(out: str | Path) -> Path:
    """``out`` as a folder to write into; a file there (or above it) is a :class:`ConfigError`."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"lies under the file {p}"
                raise ConfigError(f"--out {out} {what}: give a folder for the tuning outputs")
            break
    return out


def _open_bank(index: "str | Path | object | None"):
    if isinstance(index, (str, Path)):
        from promptblend.bank import load_bank

        return load_bank(index)
    return index


def _settings(out: Path, trials: int, workers: int, sampler: str, storage: str | None, heartbeat: int,
              seed: int, warm_start: bool, progress: bool) -> SearchSettings:
    """Checked search settings (bad counts or sampler names fail before any work)."""
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    sampler = sampler.lower()
    search.create_sampler(sampler)
    spec = search.storage_spec(storage, out, workers, heartbeat)
    return SearchSettings(spec, sampler, seed, workers, warm_start, progress)


def mean_source(mean_vector: "np.ndarray | str | None", index: "str | Path | object | None") -> str | None:
    """Where a tuning's mean vector comes from, as the boards label its baseline."""
    if isinstance(mean_vector, str):
        return {"truth": "validation prompts of the tune", "bank": f"bank {index}", "none": None}.get(mean_vector)
    return None if mean_vector is None else "a given vector"


def tune(
    runs: Sequence[Run],
    truth: Run,
    out: str | Path,
    *,
    trials: int = 500,
    folds: int = 5,
    sampler: str = "tpe",
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    seed: int = 0,
    mean_vector: "np.ndarray | str | None" = "truth",
    normalise: bool | None = None,
    index: "str | Path | object | None" = None,
    intersect: bool = False,
    group_threshold: float = 0.7,
    test_runs: Sequence[Run] | None = None,
    heartbeat: int = 10,
    progress: bool = True,
    report: bool = True,
    warm_start: bool = True,
    time_budget: "str | float | None" = None,
    test_images: int = 16000,
) -> TuneResult:
    """Tune blend weights and switches on ``runs`` against ``truth``; write the outputs into ``out``.

    Nested CV: ``folds`` folds grouped by prompt similarity (``group_threshold``); one study per
    fold tuned on the other folds and scored on it (``fold_scores``, pooled into ``out_of_fold``),
    then a final study on all images whose best trial is the blend (``in_sample``). With
    ``warm_start`` every study starts from the gradient optimum of its objective (enqueued trial);
    ``gradient_gap`` is the final gradient optimum minus the best trial. ``folds=0`` skips CV.

    ``mean_vector``: 'truth' (unit mean of each study's training truth), 'bank' (of ``index``'s
    values), 'none'/None, or a 384-vector. ``normalise``: None searches the per-run L2
    normalisation switch, True/False fixes it. ``index``: a prompt-bank index folder (or
    :class:`promptblend.bank.Bank`) that enables snap-to-bank with a tuned threshold.
    ``storage``/``study``/``workers``: Optuna storage URL (default SQLite in ``out``), study name
    prefix (default ``blend``) and worker processes. ``test_runs``: runs of another image set to
    write the submission for (default: the tuned images). ``report``: plots and ``report.html``.
    ``time_budget`` ('9h', '90m', seconds): keep only the predictor subset with the best out-of-fold
    score whose projected inference time for ``test_images`` images fits (see :mod:`ensemble.budget`);
    the frontier goes into ``report.html`` and ``frontier.csv``. None: every run is blended.

    Writes ``best.json``, ``mean_vector.npy``, ``submission.csv``, ``folds.csv``, PNG plots and
    ``report.html`` in ``out``; prints nothing but progress bars. A full disk raises
    :class:`promptblend.errors.DiskFullError` saying what is needed.
    """
    import optuna

    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = output_folder(out)
    settings = _settings(out, trials, workers, sampler, storage, heartbeat, seed, warm_start, progress)
    data = align(runs, truth, intersect=intersect)
    if data.truth is None:
        raise BlendError("tuning needs the truth")
    bank = _open_bank(index)

    def make_plan(data):
        return build_plan(data, folds=folds, seed=seed, group_threshold=group_threshold, mean_vector=mean_vector,
                          bank=bank, normalise=normalise, prefix=study or "blend", trials=trials)

    plan = make_plan(data)
    budget = None
    if time_budget is not None:
        budget = choose_under_budget(plan, [r.meta for r in runs], time_budget, test_images)
        if len(budget.chosen.runs) < len(runs):
            runs = [r for r in runs if r.name in budget.chosen.runs]
            plan = make_plan(align(runs, truth, intersect=intersect, min_runs=1))
    marks = [time.perf_counter()]
    withdraw_best(out)  # from here on the folder is being worked on
    with one_blas_thread(), search.disk_full_as_error(settings.spec, trials * len(plan.jobs)):
        optima = run_studies(plan, settings)
        marks.append(time.perf_counter())
        result, studies = evaluate(plan, settings, optima, runs, bank)
    plan.release()  # statistics and objectives: the outputs need the data and the folds only
    result.out = out
    result.mean_source = mean_source(mean_vector, index)
    result.budget = budget
    write_outputs(out, result, plan, studies, test_runs, bank, report)
    search.release_storage(settings.spec)  # SQLite: no -wal/-shm files beside best.json
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.timings = {"prepare_s": round(marks[0] - t0, 3), "studies_s": round(marks[1] - marks[0], 3),
                      "outputs_s": round(time.perf_counter() - marks[1], 3)}
    save_best(out, result)
    return result
