"""Optuna plumbing: samplers by name, storage by URL, resumable studies and crash-safe workers.

Storage follows Optuna's own advice: an SQLite file for one process, a journal file for several
processes on one host, PostgreSQL (heartbeats + retry of crashed trials) across processes and hosts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from promptblend.errors import ConfigError

log = logging.getLogger(__name__)

WARM_START = "gradient"


def _tpe(seed: int, workers: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=workers > 1)


def _cmaes(seed: int, workers: int):
    import optuna

    # CMA-ES samples continuous parameters only; the normalisation switch goes to TPE
    return optuna.samplers.CmaEsSampler(
        seed=seed, independent_sampler=_tpe(seed, workers), warn_independent_sampling=False
    )


def _random(seed: int, workers: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "cmaes": _cmaes, "random": _random}


def list_samplers() -> list[str]:
    """Names accepted by :func:`create_sampler`."""
    return sorted(SAMPLERS)


def create_sampler(name: str, seed: int = 0, workers: int = 1):
    """An Optuna sampler by name (``tpe``, ``cmaes``, ``random``), seeded."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}': choose from {list_samplers()}")
    return SAMPLERS[name](seed, workers)


class _Quiet:
    """Silence Optuna's ExperimentalWarning around the heartbeat APIs."""

    def __enter__(self):
        import optuna

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _retry():
    """Re-queue a crashed trial (same params, ``failed_trial`` system attribute) up to 3 times."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with _Quiet():
        return RetryHeartbeatStaleTrialCallback(max_retry=3)


def _fast_sqlite(storage):
    """WAL journal + synchronous=NORMAL: one fsync per checkpoint instead of per commit (a crash
    of the process still loses nothing committed; a power cut may lose the last trials)."""
    from sqlalchemy import event

    def pragmas(conn, _record):
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()
    return storage


_OPEN: dict = {}


@dataclass(frozen=True)
class StorageSpec:
    """Where studies live: ``url`` (what workers reopen), ``kind`` (sqlite/journal/rdb), heartbeat seconds."""

    url: str
    kind: str
    heartbeat: int = 10

    def open(self):
        """This process's storage object for the spec (made once, then shared by its studies)."""
        if self not in _OPEN:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                _OPEN[self] = self._make()
            except SQLAlchemyError as e:
                raise ConfigError(f"cannot open the study storage {self.public_url}: {str(e).splitlines()[0]}") from e
        return _OPEN[self]

    def _make(self):
        from optuna.storages import RDBStorage

        if self.kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(self.url))
        if self.kind == "sqlite":
            return _fast_sqlite(RDBStorage(self.url, engine_kwargs={"connect_args": {"timeout": 60}}))
        with _Quiet():
            return RDBStorage(
                self.url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=self.heartbeat,
                grace_period=3 * self.heartbeat,
                heartbeat_stale_trial_callback=_retry(),
            )

    @property
    def public_url(self) -> str:
        """The URL without a password (for logs and best.json)."""
        from urllib.parse import urlsplit, urlunsplit

        if self.kind == "journal":
            return self.url
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url


def storage_spec(url: str | None, out: str | Path, workers: int = 1, heartbeat: int = 10) -> StorageSpec:
    """Turn ``--storage`` into a :class:`StorageSpec`.

    None: ``out/optuna.db`` (SQLite) for one worker, ``out/optuna.journal`` for several.
    ``sqlite:///...``, ``postgresql://...`` (psycopg 3 is used when psycopg2 is absent), ``mysql...``,
    or a path ending in ``.journal``.
    """
    out = Path(out)
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        if workers > 1:
            return StorageSpec(str(out / "optuna.journal"), "journal", heartbeat)
        return StorageSpec(f"sqlite:///{(out / 'optuna.db').resolve()}", "sqlite", heartbeat)
    if url.endswith(".journal"):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec(url, "journal", heartbeat)
    if url.startswith("sqlite:"):
        if workers > 1:
            raise ConfigError("SQLite cannot serve several worker processes: use a .journal path or postgresql://")
        return StorageSpec(url, "sqlite", heartbeat)
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        try:
            import psycopg2  # noqa: F401

            scheme = "postgresql"
        except ImportError:
            scheme = "postgresql+psycopg"
        return StorageSpec(f"{scheme}://{rest}", "rdb", heartbeat)
    if url.startswith(("postgresql+", "mysql")):
        return StorageSpec(url, "rdb", heartbeat)
    raise ConfigError(f"unsupported --storage '{url}': use sqlite:///FILE, FILE.journal or postgresql://...")


def open_study(spec: StorageSpec, name: str, sampler=None, fingerprint: str | None = None):
    """Create or load study ``name`` (maximising); a study made for other data is refused."""
    import optuna

    study = optuna.create_study(
        study_name=name, storage=spec.open(), sampler=sampler, direction="maximize", load_if_exists=True
    )
    if fingerprint is not None:
        have = study.user_attrs.get("fingerprint")
        if have is None:
            study.set_user_attr("fingerprint", fingerprint)
        elif have != fingerprint:
            raise ConfigError(
                f"study '{name}' in {spec.public_url} was made for other data or folds; use another --study name"
            )
    return study


def recover_orphans(study) -> int:
    """Fail trials left RUNNING by a killed single-host run and re-queue them; return how many.

    Only for SQLite and journal storage, where no other process may be running the study.
    """
    from optuna.trial import TrialState

    retry = _retry()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            retry(study, study._storage.get_trial(t._trial_id))
            n += 1
    if n:
        log.warning("study %s: %d trials of a killed run were re-queued", study.study_name, n)
    return n


def enqueue_warm_start(study, params: dict) -> bool:
    """Enqueue the gradient optimum as the first trial of a new study; False if the study had trials."""
    if study.get_trials(deepcopy=False):
        return False
    study.enqueue_trial(params, user_attrs={"source": WARM_START})
    return True


@dataclass
class Counts:
    """Trials of a study by state."""

    complete: int
    running: int
    waiting: int


def counts(study) -> Counts:
    """How many trials are complete, running and waiting."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Counts(
        states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING), states.count(TrialState.WAITING)
    )


def run_study(study, objective: Callable, n_trials: int, on_trial: Callable | None = None, poll: float = 0.2) -> None:
    """Work on ``study`` until it holds ``n_trials`` complete trials and none is in flight.

    Safe with many processes on one study: a worker starts a trial only while complete + running
    trials fall short of the target or a (retried) trial waits; then it waits for the others'
    trials, so a crashed worker's trial, failed by the heartbeat and re-queued, is still run.
    """
    from optuna.storages import fail_stale_trials

    tag = f"{socket.gethostname()}:{os.getpid()}"

    def wrapped(trial):
        trial.set_user_attr("worker", tag)
        return objective(trial)

    def stop_when_full(study, trial):
        if on_trial is not None:
            on_trial(trial)
        c = counts(study)
        if c.complete + c.running >= n_trials and not c.waiting:
            study.stop()

    while True:
        with _Quiet():
            fail_stale_trials(study)
        c = counts(study)
        if c.waiting or c.complete + c.running < n_trials:
            study.optimize(wrapped, callbacks=[stop_when_full], gc_after_trial=False)
            continue
        if not c.running:
            return
        time.sleep(poll)


def best_trial(study):
    """The best complete trial (ties: the earliest)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study.study_name} has no complete trial")
    return max(done, key=lambda t: (t.value, -t.number))


def suggest_blend(trial, names: Sequence[str], has_mean: bool, normalise: bool | None) -> tuple[np.ndarray, bool]:
    """Sample ``[w.., m]`` in [0, 1] and the normalisation switch (searched when ``normalise`` is None)."""
    c = [trial.suggest_float(f"w[{n}]", 0.0, 1.0) for n in names]
    c.append(trial.suggest_float("mean", 0.0, 1.0) if has_mean else 0.0)
    norm = trial.suggest_categorical("normalise", [True, False]) if normalise is None else normalise
    return np.asarray(c), bool(norm)


def blend_trial_params(names: Sequence[str], c: np.ndarray, norm: bool, has_mean: bool, normalise: bool | None) -> dict:
    """The Optuna params that :func:`suggest_blend` would return ``(c, norm)`` from (for enqueueing)."""
    params: dict = {f"w[{n}]": float(c[j]) for j, n in enumerate(names)}
    if has_mean:
        params["mean"] = float(c[len(names)])
    if normalise is None:
        params["normalise"] = bool(norm)
    return params


def decode(params: dict, names: Sequence[str], has_mean: bool, normalise: bool | None) -> tuple[np.ndarray, bool]:
    """Inverse of :func:`blend_trial_params`."""
    c = [params[f"w[{n}]"] for n in names] + [params.get("mean", 0.0) if has_mean else 0.0]
    return np.asarray(c, np.float64), bool(params["normalise"]) if normalise is None else normalise
