"""Run the studies of a :class:`~ensemble.tune.plan.CvPlan`: gradient optima, warm starts, workers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .. import search
from ..objective import RawStats
from ..optimum import gradient_optimum
from .plan import CvPlan, Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """How the studies run: storage, sampler name and seed, worker processes, warm start, progress bars."""

    spec: search.StorageSpec
    sampler: str = "tpe"
    seed: int = 0
    workers: int = 1
    warm_start: bool = True
    progress: bool = True

    @property
    def orphans(self) -> bool:
        """Whether dead workers' trials are found by owner (SQLite, journal) rather than by heartbeat."""
        return self.spec.kind != "rdb"

    def sampler_for(self, study_index: int, worker: int = 0):
        """``complete -> sampler`` for study ``study_index`` (seeded per trial, see :func:`search.trial_seed`)."""
        base = self.seed + 1000 * worker + study_index
        return lambda complete: search.create_sampler(self.sampler, search.trial_seed(base, complete), self.workers)


@dataclass(frozen=True)
class Optimum:
    """The gradient optimum of a study's objective: coefficients, score and normalisation."""

    c: np.ndarray
    score: float
    normalise: bool


def one_blas_thread():
    """One BLAS thread for the search: its products are small, and threaded BLAS on busy cores
    spins instead of working (L-BFGS-B and the objective slowed 2-10x here)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _progress_bar(total: int, desc: str, enabled: bool):
    from promptblend.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="trial", disable=not enabled, leave=False)


def job_optimum(job: Job, raw: RawStats) -> Optimum:
    """The best gradient optimum over the normalisation settings ``job`` may pick."""
    found = [(gradient_optimum(obj), norm) for norm, obj in job.objectives(raw).items()]
    (c, score), norm = max(found, key=lambda r: r[0][1])
    return Optimum(c, score, norm)


def open_studies(plan: CvPlan, settings: SearchSettings) -> None:
    """Create (or reopen) every study, refusing one made for other data, before any trial runs."""
    for job in plan.jobs:
        search.open_study(settings.spec, job.name, fingerprint=job.fingerprint)


def prepare_study(job: Job, raw: RawStats, settings: SearchSettings) -> Optimum:
    """Re-queue a killed run's trials of ``job``'s study and enqueue its gradient optimum as the first
    trial when ``warm_start``; return the optimum (its objectives stay built for the trials)."""
    best = job_optimum(job, raw)
    study = search.open_study(settings.spec, job.name)
    if settings.orphans:
        search.recover_orphans(study)
    if settings.warm_start:
        search.enqueue_warm_start(study, job.space.params(best.c, best.normalise))
    return best


def _done_with(plan: CvPlan, job: Job) -> None:
    """Free a fold study's objectives once its trials are done (the final study's serve the evaluation)."""
    if job is not plan.final:
        job.release()


def run_studies(plan: CvPlan, settings: SearchSettings) -> list[Optimum]:
    """Run every study of ``plan`` to its trial count (in this process or in workers); return the optima.

    In this process the studies run one after another, each on objectives built once for its
    gradient optimum and its trials, so at most one fold's objectives (and the final's) are held.
    With workers, every study is prepared before they start.
    """
    open_studies(plan, settings)
    optima = []
    if settings.workers == 1:
        for i, job in enumerate(plan.jobs):
            optima.append(prepare_study(job, plan.raw, settings))
            study = search.open_study(settings.spec, job.name)
            bar = _progress_bar(job.n_trials, job.name, settings.progress)
            bar.update(min(search.counts(study).complete, job.n_trials))
            search.run_study(study, job.trial_function(plan.raw), job.n_trials,
                             on_trial=lambda t, b=bar: b.update(1), sampler_for=settings.sampler_for(i),
                             orphans=settings.orphans)
            bar.close()
            _done_with(plan, job)
    else:
        for job in plan.jobs:
            optima.append(prepare_study(job, plan.raw, settings))
            _done_with(plan, job)
        _run_workers(plan, settings)
    return optima


def run_worker(settings: SearchSettings, jobs: list[Job], raw: RawStats, worker: int) -> None:
    """A worker process: run every study of ``jobs`` in turn until each holds its trials.

    Spawned by :func:`run_studies` with ``settings.workers > 1``; its sampler seeds are offset by ``worker``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for i, job in enumerate(jobs):
        study = search.open_study(settings.spec, job.name)
        search.run_study(study, job.trial_function(raw), job.n_trials, sampler_for=settings.sampler_for(i, worker),
                         orphans=settings.orphans)


def _run_workers(plan: CvPlan, settings: SearchSettings) -> None:
    """Spawn the worker processes on the shared studies; show progress by polling the storage;
    finish here what crashed workers left."""
    import multiprocessing as mp

    jobs, raw = plan.jobs, plan.raw
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(settings, jobs, raw, w), daemon=True) for w in range(settings.workers)]
    for p in procs:
        p.start()
    studies = [search.open_study(settings.spec, job.name) for job in jobs]
    bar = _progress_bar(sum(job.n_trials for job in jobs), f"{settings.workers} workers", settings.progress)
    while any(p.is_alive() for p in procs):
        done = sum(min(search.counts(st).complete, job.n_trials) for st, job in zip(studies, jobs))
        bar.update(done - bar.n)
        time.sleep(0.5)
    bar.close()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        log.warning("%d of %d workers ended abnormally (exit codes %s); finishing their studies here",
                    len(bad), settings.workers, bad)
    for i, (study, job) in enumerate(zip(studies, jobs)):
        if settings.orphans:
            search.recover_orphans(study)
        search.run_study(study, job.trial_function(raw), job.n_trials, sampler_for=settings.sampler_for(i),
                         orphans=settings.orphans)
        _done_with(plan, job)
