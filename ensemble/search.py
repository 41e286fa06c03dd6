"""Optuna plumbing: samplers by name, storage by URL, resumable studies and crash-safe workers.

Storage follows Optuna's own advice: an SQLite file for one process, a journal file for several
processes on one host, PostgreSQL (heartbeats fail crashed workers' trials) across processes and hosts.
A crashed trial is sampled again, or re-queued when it was enqueued (:class:`_Retry`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from promptblend.errors import ConfigError, DiskFullError
from promptblend.owner import owner_alive, owner_tag

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


class _Retry:
    """What becomes of a trial whose worker died: an enqueued trial (the warm start, any fixed-params trial)
    is queued again with its params, up to 3 times (Optuna's ``failed_trial``/``retry_history`` attributes);
    a sampled one is only failed, and the next trial samples it again.

    Re-queueing a sampled trial would fix the params it had drawn before the kill and sample the rest
    from a fresh generator: while TPE samples independently (its start-up trials) that shifts every
    later draw, so a resumed study would leave the uninterrupted run's path. Failed trials are not in
    any sampler's history and :func:`trial_seed` depends on the complete trials only, so the next trial
    draws exactly what the killed one had drawn, and would have drawn to the end.
    """

    def __init__(self) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with _Quiet():
            self._requeue = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def __call__(self, study, trial) -> None:
        if "fixed_params" in trial.system_attrs:
            self._requeue(study, trial)


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
            except (SQLAlchemyError, OSError) as e:
                if _disk_full_cause(e, self.file):
                    raise storage_full_error(self, 0) from e
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
                heartbeat_stale_trial_callback=_Retry(),
            )

    @property
    def file(self) -> Path | None:
        """The local file of SQLite or journal storage (None for a database server)."""
        if self.kind == "journal":
            return Path(self.url)
        if self.kind == "sqlite":
            return Path(self.url.split(":///", 1)[1].split("?", 1)[0])
        return None

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


def release_storage(spec: StorageSpec) -> None:
    """Close this process's idle connections to ``spec``'s storage (reopened on the next use).

    The last connection to an SQLite file in WAL mode to close folds its ``-wal`` and ``-shm``
    files back into the database, so the folder holds the database alone until it is opened again.
    """
    engine = getattr(_OPEN.get(spec), "engine", None)
    if engine is not None:
        engine.dispose()


#: Bytes a complete trial adds to SQLite storage for a handful of runs (measured: ~1.1 KB per trial
#: with 3 runs, 300 trials in a 420 KB file; taken with a margin for the WAL and more runs)
BYTES_PER_TRIAL = 4096


def _room(path: Path) -> int:
    """Bytes ``path`` may still grow by: free disk space, capped by a file-size limit (RLIMIT_FSIZE)."""
    import resource
    import shutil

    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    room = shutil.disk_usage(folder).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        sizes = [p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.is_file()]
        room = min(room, max(0, limit - max(sizes, default=0)))
    return room


def _disk_full_cause(err: BaseException, path: Path | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) says the storage's disk is full."""
    from promptblend.atomic import is_disk_full

    seen = err
    while seen is not None:
        text = str(seen).lower()
        if is_disk_full(seen) or "database or disk is full" in text:
            return True
        if "disk i/o error" in text and path is not None and _room(path) < (1 << 20):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def storage_full_error(spec: "StorageSpec", trials: int) -> DiskFullError:
    """The named error for a study storage that ran out of disk, with the space ``trials`` more trials need."""
    from promptblend.atomic import format_bytes

    path = spec.file
    needed = (trials + 100) * BYTES_PER_TRIAL
    room = _room(path) if path is not None else None
    have = f", {format_bytes(room)} available" if room is not None else ""
    what = f"{trials} trials need" if trials else "its tables and first trials need"
    return DiskFullError(
        f"disk full: the study storage {path or spec.public_url} cannot grow; {what} about "
        f"{format_bytes(needed)}{have}: free space (or raise the file-size limit) and run again to resume",
        path=path, needed=needed, free=room,
    )


@contextlib.contextmanager
def disk_full_as_error(spec: "StorageSpec", trials: int):
    """Turn a full disk under the study storage (SQLite, journal) into :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if spec.file is None or not _disk_full_cause(e, spec.file):
            raise
        raise storage_full_error(spec, trials) from e


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


#: Seconds a RUNNING trial may go without its owner recorded, while other live workers share the study,
#: before it counts as orphaned (a live worker records itself as soon as Optuna has created the trial)
UNCLAIMED_GRACE_S = 30.0
_REGISTERED = "worker@"


def worker_tag(number: int) -> str:
    """``trial@host:start:pid``: the process that runs trial ``number`` (recorded as its ``worker`` attribute)."""
    return f"{number}@{owner_tag()}"


def register_worker(study) -> None:
    """Record this process as a worker of ``study`` (before it starts trials there)."""
    key = _REGISTERED + owner_tag()
    if key not in study.user_attrs:
        study.set_user_attr(key, True)


def _others_alive(study) -> bool:
    """Whether another registered worker of ``study`` may still run."""
    me = _REGISTERED + owner_tag()
    return any(owner_alive(k[len(_REGISTERED):]) for k in study.user_attrs if k.startswith(_REGISTERED) and k != me)


def _orphaned(trial, now, others_alive: bool) -> bool:
    """Whether a RUNNING trial's worker is dead: its recorded owner is gone, or it recorded none and
    no other worker lives (or it has gone without one for :data:`UNCLAIMED_GRACE_S`)."""
    tag = trial.user_attrs.get("worker")
    if isinstance(tag, str) and tag.split("@", 1)[0] == str(trial.number):
        return not owner_alive(tag.split("@", 1)[1])
    # no owner (or one inherited by a retry): killed between Optuna's ask and the claim, or still starting
    start = trial.datetime_start
    return not others_alive or (start is not None and (now - start).total_seconds() > UNCLAIMED_GRACE_S)


def recover_orphans(study) -> int:
    """Fail the RUNNING trials whose worker process is dead (re-queueing the enqueued ones, see
    :class:`_Retry`); return how many.

    For SQLite and journal storage (PostgreSQL has heartbeats), called while this process runs no
    trial: a trial's owner is the :func:`worker_tag` it records when it starts; a live worker's
    trial, here or on another host, is left alone.
    """
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    retry, n, now, others = _Retry(), 0, datetime.now(), _others_alive(study)  # workers read after trials
    for t in running:
        if not _orphaned(t, now, others):
            continue
        try:
            failed = study.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue  # finished meanwhile (by its worker, or failed as an orphan by another process)
        retry(study, failed)
        n += 1
    if n:
        log.warning("study %s: %d trials of a killed run will run again", study.study_name, n)
    return n


def enqueue_warm_start(study, params: dict) -> bool:
    """Enqueue the gradient optimum as the first trial of a new study; False if the study had trials,
    unless its warm start was lost (every warm-start trial failed and none waits: a run killed between
    failing the trial of a dead worker and re-queueing it, or one whose retries ran out)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    warm = [t for t in trials if t.user_attrs.get("source") == WARM_START]
    if trials and (not warm or any(t.state != TrialState.FAIL for t in warm)):
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


def trial_seed(seed: int, complete: int) -> int:
    """The sampler seed of the trial that follows ``complete`` finished trials.

    A study's sampler is made afresh before each trial with this seed, so a study resumed after a
    kill samples exactly what an uninterrupted run would have (trials failed by the kill and their
    retries aside, the history the sampler sees is the same).
    """
    return int(np.random.SeedSequence([seed, complete]).generate_state(1)[0])


def _lost(study, number: int | None) -> bool:
    """Whether trial ``number`` was failed by another process (as orphaned) while this one ran it."""
    from optuna.trial import TrialState

    if number is None:
        return False
    found = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number == number]
    return bool(found)


def run_study(
    study,
    objective: Callable,
    n_trials: int,
    on_trial: Callable | None = None,
    poll: float = 0.2,
    sampler_for: Callable[[int], object] | None = None,
    orphans: bool = False,
) -> None:
    """Work on ``study`` until it holds ``n_trials`` complete trials and none is in flight.

    Safe with many processes on one study: a worker starts a trial only while complete + running
    trials fall short of the target or a (retried) trial waits; then it waits for the others'
    trials, so a crashed worker's trial, failed by the heartbeat (or with ``orphans``, for SQLite
    and journal storage, by :func:`recover_orphans`), is still run: sampled again, or re-queued when it
    was enqueued (:class:`_Retry`). Each trial records its :func:`worker_tag`; a trial failed under this
    worker by another process is left to that process (it re-queues an enqueued trial; a sampled one is
    drawn again).
    ``sampler_for(complete)``: the sampler for the next trial (see :func:`trial_seed`).
    """
    from optuna.storages import fail_stale_trials

    if orphans:
        register_worker(study)
    current: dict = {}

    def wrapped(trial):
        current["number"] = trial.number
        trial.set_user_attr("worker", worker_tag(trial.number))
        try:
            return objective(trial)
        except Exception as e:
            current["error"] = e
            raise

    def next_trial(study, trial):
        if on_trial is not None:
            on_trial(trial)
        c = counts(study)
        if c.complete + c.running >= n_trials and not c.waiting:
            study.stop()
        elif sampler_for is not None:
            study.sampler = sampler_for(c.complete)

    while True:
        with _Quiet():
            fail_stale_trials(study)
        c = counts(study)
        if c.waiting or c.complete + c.running < n_trials:
            if sampler_for is not None:
                study.sampler = sampler_for(c.complete)
            current.clear()
            try:
                study.optimize(wrapped, callbacks=[next_trial], gc_after_trial=False)
            except Exception as e:
                if e is current.get("error") or not _lost(study, current.get("number")):
                    raise
                log.warning("study %s: trial %d was failed as an orphan by another process; moving on",
                            study.study_name, current["number"])
            continue
        if not c.running:
            return
        if orphans:
            recover_orphans(study)
        time.sleep(poll)


def best_trial(study):
    """The best complete trial (ties: the earliest)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study.study_name} has no complete trial")
    return max(done, key=lambda t: (t.value, -t.number))
