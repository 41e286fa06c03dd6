"""Tune a blend: nested grouped CV over Optuna studies, a final study on all data, the gradient check."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend.errors import BlendError, ConfigError
from promptblend.runs import Run
from promptblend.vectors import DIM, check_embeddings, l2_normalise

from . import search
from .align import Aligned, align
from .blend import BlendParams, blend_stack, save_params
from .objective import BlendObjective, MeanStats, RawStats, mean_stats_many, raw_stats
from .optimum import gradient_optimum

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One study: the images it is tuned on and its mean-vector terms."""

    name: str
    rows: np.ndarray
    mean: MeanStats | None
    names: list[str]
    normalise: bool | None
    n_trials: int

    def objectives(self, raw: RawStats) -> dict[bool, BlendObjective]:
        """The objective per normalisation setting the study may pick."""
        options = (True, False) if self.normalise is None else (self.normalise,)
        sub, mean = raw.take(self.rows), self.mean.take(self.rows) if self.mean is not None else None
        return {norm: BlendObjective(sub, norm, mean) for norm in options}

    def trial_function(self, raw: RawStats):
        """``trial -> score`` for Optuna."""
        objs = self.objectives(raw)
        has_mean = self.mean is not None

        def objective(trial) -> float:
            c, norm = search.suggest_blend(trial, self.names, has_mean, self.normalise)
            return objs[norm](c)

        return objective


def run_worker(spec: search.StorageSpec, jobs: list[Job], raw: RawStats, sampler: str, seed: int, worker: int) -> None:
    """A worker process: run every study of ``jobs`` in turn until each holds its trials.

    Spawned by :func:`tune` with ``workers > 1``; its sampler seed is offset by ``worker``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for i, job in enumerate(jobs):
        study = search.open_study(spec, job.name, search.create_sampler(sampler, seed + 1000 * worker + i, 2))
        search.run_study(study, job.trial_function(raw), job.n_trials)


@dataclass
class TuneResult:
    """What :func:`tune` found; ``params`` blends new runs via :func:`ensemble.blend.apply_blend`."""

    params: BlendParams
    in_sample: float
    out_of_fold: float | None
    fold_scores: list[float]
    fold_in_sample: list[float]
    gradient_optimum: float
    gradient_gap: float
    search_gap: float | None
    single_scores: dict[str, float]
    n_images: int
    n_groups: int | None
    largest_group: int | None
    dropped: dict[str, int]
    studies: list[str]
    storage: str
    sampler: str
    trials: int
    folds: int
    seed: int
    snap: dict | None = None
    fold_weights: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    submission: Path | None = None

    def summary(self) -> dict:
        """The JSON-able fields written to best.json (besides the blend params)."""
        d = asdict(self)
        for k in ("params", "out", "submission"):
            d.pop(k)
        d["submission"] = self.submission.name if self.submission else None
        return d


def _mean_for(mean_vector, truth: np.ndarray, rows: np.ndarray, bank) -> np.ndarray | None:
    if mean_vector is None or (isinstance(mean_vector, str) and mean_vector == "none"):
        return None
    if isinstance(mean_vector, str):
        if mean_vector == "truth":
            return l2_normalise(truth[rows].mean(axis=0, dtype=np.float64)[None])[0].astype(np.float64)
        if mean_vector == "bank":
            if bank is None:
                raise ConfigError("mean vector 'bank' needs a prompt-bank index (--index)")
            return bank.mean_vector().astype(np.float64)
        raise ConfigError(f"mean vector must be 'truth', 'bank', 'none' or a vector, got '{mean_vector}'")
    mu = check_embeddings(np.asarray(mean_vector, np.float32).reshape(1, -1), what="mean vector")[0]
    return l2_normalise(mu[None])[0].astype(np.float64)


def _fingerprint(data: Aligned, raw: RawStats, rows: np.ndarray, mu: np.ndarray | None, normalise: bool | None) -> str:
    """What a study was made for: ids, run names, its rows, a coarse digest of the runs' content."""
    h = hashlib.sha256()
    h.update(np.round(raw.truth[rows].mean(axis=0), 4).tobytes())
    h.update(np.round(raw.norms[rows].mean(axis=0), 4).tobytes())
    h.update("\n".join(data.ids).encode())
    h.update("\n".join(data.names).encode())
    h.update(np.asarray(rows, np.int64).tobytes())
    h.update(b"none" if mu is None else np.round(mu, 6).tobytes())
    h.update(str(normalise).encode())
    return h.hexdigest()[:16]


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=not enabled, leave=False)


def _one_blas_thread():
    """One BLAS thread for the search: its products are small, and threaded BLAS on busy cores
    spins instead of working (L-BFGS-B and the objective slowed 2-10x here)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


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
) -> TuneResult:
    """Tune blend weights and switches on ``runs`` against ``truth``; write the outputs into ``out``.

    Nested CV: ``folds`` folds grouped by prompt similarity (``group_threshold``); one study per
    fold tuned on the other folds and scored on it (``fold_scores``, pooled into ``out_of_fold``),
    then a final study on all images whose best trial is the blend (``in_sample``). Every study
    starts from the gradient optimum of its objective (enqueued trial); ``gradient_gap`` is the
    final gradient optimum minus the best trial. ``folds=0`` skips CV.

    ``mean_vector``: 'truth' (unit mean of each study's training truth), 'bank' (of ``index``'s
    values), 'none'/None, or a 384-vector. ``normalise``: None searches the per-run L2
    normalisation switch, True/False fixes it. ``index``: a prompt-bank index folder (or
    :class:`promptblend.bank.Bank`) that enables snap-to-bank with a tuned threshold.
    ``storage``/``study``/``workers``: Optuna storage URL (default SQLite in ``out``), study name
    prefix (default ``blend``) and worker processes. ``test_runs``: runs of another image set to
    write the submission for (default: the tuned images).

    Writes ``best.json``, ``mean_vector.npy``, ``submission.csv``, ``folds.csv`` and PNG plots in ``out``.
    """
    import optuna

    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    data = align(runs, truth, intersect=intersect)
    if data.truth is None:
        raise BlendError("tuning needs the truth")
    bank = index
    if isinstance(index, (str, Path)):
        from promptblend.bank import load_bank

        bank = load_bank(index)
    sampler = sampler.lower()
    search.create_sampler(sampler)  # fail early on a bad name
    spec = search.storage_spec(storage, out, workers, heartbeat)
    prefix = study or "blend"
    n = len(data.ids)
    all_rows = np.arange(n)

    timings = {}
    raw = raw_stats(data.stack, data.truth)
    n_groups = largest = fold_of = groups = None
    if folds:
        from .cv import group_folds, similarity_groups

        groups = similarity_groups(data.truth, group_threshold)
        sizes = np.bincount(groups)
        n_groups, largest = int(sizes.size), int(sizes.max())
        fold_of = group_folds(groups, folds, seed)

    jobs, tests, mus = [], [], []
    for f in range(folds):
        train, test = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        mus.append(_mean_for(mean_vector, data.truth, train, bank))
        jobs.append((f"{prefix}-fold{f}", train))
        tests.append(test)
    mus.append(_mean_for(mean_vector, data.truth, all_rows, bank))
    jobs.append((f"{prefix}-final", all_rows))
    has_mean = mus[-1] is not None
    means = mean_stats_many(data.stack, data.truth, mus) if has_mean else [None] * len(mus)
    job_list = [Job(name, rows, m, data.names, normalise, trials) for (name, rows), m in zip(jobs, means)]

    timings["prepare_s"] = round(time.perf_counter() - t0, 3)
    with _one_blas_thread():
        optima = _search(spec, job_list, raw, data, mus, normalise, has_mean, sampler, seed, workers, trials, progress)

    timings["studies_s"] = round(time.perf_counter() - t0 - timings["prepare_s"], 3)
    studies = [search.open_study(spec, job.name) for job in job_list]
    best_trials = [search.best_trial(st) for st in studies]
    decoded = [search.decode(t.params, data.names, has_mean, normalise) for t in best_trials]

    fold_scores, fold_in, fold_weights, oof = [], [], [], np.zeros(n)
    snap_info = None
    for f in range(folds):
        c, norm = decoded[f]
        obj = BlendObjective(raw.take(tests[f]), norm, job_list[f].mean.take(tests[f]) if has_mean else None)
        oof[tests[f]] = obj.cosines(c)
        fold_in.append(float(best_trials[f].value))
        fold_weights.append(dict(zip(data.names, (c[: len(data.names)] / max(c.max(), 1e-12)).tolist())))
    c_final, norm_final = decoded[-1]
    final_obj = job_list[-1].objectives(raw)[norm_final]
    in_sample = final_obj(c_final)
    snap_threshold = None
    if bank is not None:
        snap_threshold, snap_info, oof = _tune_snap(data, bank, decoded, mus, fold_of, tests, oof, final_obj, c_final)
        in_sample += snap_info["in_sample_gain"]
    fold_scores = [float(oof[t].mean()) for t in tests]
    out_of_fold = float(oof.mean()) if folds else None

    grad_v = optima[-1][1]
    searched = [t.value for t in studies[-1].get_trials(deepcopy=False) if t.value is not None and t.user_attrs.get("source") != search.WARM_START]
    scale = max(c_final.max(), 1e-12)
    params = BlendParams(
        weights=dict(zip(data.names, (c_final[: len(data.names)] / scale).tolist())),
        mean_weight=float(c_final[-1] / scale) if has_mean else 0.0,
        normalise=norm_final,
        mean_vector=mus[-1].astype(np.float32) if has_mean else None,
        snap_threshold=snap_threshold,
        bank=getattr(bank, "path", None),
    )
    result = TuneResult(
        params=params,
        in_sample=float(in_sample),
        out_of_fold=out_of_fold,
        fold_scores=fold_scores,
        fold_in_sample=fold_in,
        gradient_optimum=grad_v,
        gradient_gap=float(grad_v - best_trials[-1].value),
        search_gap=float(grad_v - max(searched)) if searched else None,
        single_scores={name: float(final_obj(np.eye(len(data.names) + 1)[j])) for j, name in enumerate(data.names)},
        n_images=n,
        n_groups=n_groups,
        largest_group=largest,
        dropped=data.dropped,
        studies=[job.name for job in job_list],
        storage=spec.public_url,
        sampler=sampler,
        trials=trials,
        folds=folds,
        seed=seed,
        snap=snap_info,
        fold_weights=fold_weights,
        out=out,
    )
    result.submission = _write_submission(out, params, data, test_runs, bank)
    if folds:
        _write_folds(out / "folds.csv", data.ids, fold_of, groups)
    if report:
        from . import report as rep

        rep.write_plots(out, result, studies)
    result.wall_s = round(time.perf_counter() - t0, 3)
    timings["outputs_s"] = round(result.wall_s - timings["prepare_s"] - timings["studies_s"], 3)
    result.timings = timings
    save_params(out, params, result.summary())
    if report:
        rep.print_table(result)
    return result


def _search(spec, job_list, raw, data, mus, normalise, has_mean, sampler, seed, workers, trials, progress) -> list:
    """Create every study with its gradient optimum enqueued as the first trial (all before any
    worker starts), run them, and return the optima ``(c, score, normalise)``."""
    optima = []
    for i, job in enumerate(job_list):
        best = max((gradient_optimum(obj) + (norm,) for norm, obj in job.objectives(raw).items()), key=lambda r: r[1])
        optima.append(best)
        st = search.open_study(spec, job.name, fingerprint=_fingerprint(data, raw, job.rows, mus[i], normalise))
        if spec.kind != "rdb":
            search.recover_orphans(st)
        search.enqueue_warm_start(st, search.blend_trial_params(data.names, best[0], best[2], has_mean, normalise))

    if workers == 1:
        for i, job in enumerate(job_list):
            st = search.open_study(spec, job.name, search.create_sampler(sampler, seed + i))
            bar = _progress_bar(trials, job.name, progress)
            bar.update(min(search.counts(st).complete, trials))
            search.run_study(st, job.trial_function(raw), trials, on_trial=lambda t, b=bar: b.update(1))
            bar.close()
    else:
        _run_workers(spec, job_list, raw, sampler, seed, workers, progress)
    return optima


def _run_workers(spec, job_list, raw, sampler, seed, workers, progress) -> None:
    """Spawn ``workers`` processes on the shared studies; show progress by polling the storage."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(spec, job_list, raw, sampler, seed, w), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    studies = [search.open_study(spec, job.name) for job in job_list]
    total = sum(job.n_trials for job in job_list)
    bar = _progress_bar(total, f"{workers} workers", progress)
    while any(p.is_alive() for p in procs):
        done = sum(min(search.counts(st).complete, job.n_trials) for st, job in zip(studies, job_list))
        bar.update(done - bar.n)
        time.sleep(0.5)
    bar.close()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        log.warning("%d of %d workers ended abnormally (exit codes %s); finishing their studies here", len(bad), workers, bad)
    for i, (st, job) in enumerate(zip(studies, job_list)):
        if spec.kind != "rdb":
            search.recover_orphans(st)
        st.sampler = search.create_sampler(sampler, seed + i)
        search.run_study(st, job.trial_function(raw), job.n_trials)


def _tune_snap(data, bank, decoded, mus, fold_of, tests, oof, final_obj, c_final):
    """Snap thresholds: per fold from its training images (applied to the held-out fold), then final."""
    from .snap import best_threshold

    y = data.truth.astype(np.float64)

    def parts(c, norm, mu):
        emb = blend_stack(data.stack, c, norm, mu)
        sim, rows = bank.nearest_values(emb)
        snapped = np.einsum("ij,ij->i", bank.value_rows(rows).astype(np.float64), y)
        plain = np.einsum("ij,ij->i", emb.astype(np.float64), y)
        return sim, snapped, plain

    oof = oof.copy()
    for f, test in enumerate(tests):
        c, norm = decoded[f]
        sim, snapped, plain = parts(c, norm, mus[f])
        train = np.flatnonzero(fold_of != f)
        t, _ = best_threshold(sim[train], snapped[train], plain[train])
        if t is not None:
            hit = test[sim[test] >= t]
            oof[hit] = snapped[hit]
    c, norm = decoded[-1]
    sim, snapped, plain = parts(c, norm, mus[-1])
    threshold, gain = best_threshold(sim, snapped, plain)
    n_snapped = int((sim >= threshold).sum()) if threshold is not None else 0
    return threshold, {"threshold": threshold, "in_sample_gain": gain, "n_snapped": n_snapped}, oof


def _write_folds(path: Path, ids: list[str], fold_of: np.ndarray, groups: np.ndarray) -> None:
    """``imgId,fold,group`` per image: which fold held it out and its prompt-similarity group."""
    from promptblend import atomic

    lines = ["imgId,fold,group"] + [f"{i},{f},{g}" for i, f, g in zip(ids, fold_of.tolist(), groups.tolist())]
    atomic.write_text(path, "\n".join(lines) + "\n")


def _write_submission(out: Path, params: BlendParams, data: Aligned, test_runs, bank) -> Path:
    """Blend the test runs (or the tuned images) with the final params; write and validate submission.csv."""
    from promptblend.submission import write_submission

    from .blend import apply_blend

    if test_runs:
        emb = apply_blend(params, test_runs, bank=bank)
        ids = next(r.ids for r in test_runs if r.name in params.weights)
    else:
        emb = blend_stack(data.stack, params.coefficients(data.names), params.normalise, params.mean_vector)
        if params.snap_threshold is not None:
            emb = bank.snap(emb, params.snap_threshold)
        ids = data.ids
    if emb.shape[1] != DIM:
        raise BlendError(f"blend has {emb.shape[1]} columns, expected {DIM}")
    return write_submission(out / "submission.csv", ids, emb)
