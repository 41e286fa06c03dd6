"""Distributed studies: worker processes share one study; a SIGKILLed worker loses no trial.

The PostgreSQL test needs a server: set PROMPTBLEND_TEST_PG_URL=postgresql://user@host:port/db.
"""

import multiprocessing as mp
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from ensemble import search
from ensemble.objective import raw_stats
from ensemble.synthetic import synthetic_problem
from ensemble.tune import BlendSpace, Job, SearchSettings, run_worker, tune

PG_URL = os.environ.get("PROMPTBLEND_TEST_PG_URL")
N_TRIALS = 30


def _running_trial_of(study, pid):
    tag = f":{pid}"
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if str(t.user_attrs.get("worker", "")).endswith(tag)]


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="PROMPTBLEND_TEST_PG_URL is not set")
def test_three_workers_one_killed_no_trial_lost_or_duplicated(tmp_path):
    runs, truth = synthetic_problem(2000, 4, seed=11)
    stack = np.stack([r.embeddings for r in runs])
    raw = raw_stats(stack, truth.embeddings)
    spec = search.storage_spec(PG_URL, tmp_path, workers=3, heartbeat=1)
    name = f"kill-{uuid.uuid4().hex[:8]}"
    job = Job(name, np.arange(2000), BlendSpace.of([r.name for r in runs], False, None), N_TRIALS)
    settings = SearchSettings(spec, "tpe", 0, workers=3)
    study = search.open_study(spec, name)  # created once, before the workers start
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(settings, [job], raw, w)) for w in range(3)]
    for p in procs:
        p.start()
    victim = procs[0]
    deadline = time.time() + 240
    killed_trial = None
    while killed_trial is None:
        assert time.time() < deadline, "the victim never ran a trial"
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done >= 5 and victim.is_alive():
            os.kill(victim.pid, signal.SIGSTOP)  # freeze it, then kill it only in the middle of a trial
            mine = _running_trial_of(study, victim.pid)
            if mine:
                os.kill(victim.pid, signal.SIGKILL)
                killed_trial = mine[0].number
            else:
                os.kill(victim.pid, signal.SIGCONT)
        time.sleep(0.05)
    for p in procs[1:]:
        p.join(timeout=300)
        assert p.exitcode == 0
    victim.join(timeout=10)
    assert victim.exitcode == -signal.SIGKILL

    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # no duplicated trial numbers
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert N_TRIALS <= len(complete) <= N_TRIALS + 2  # at most workers-1 over, from racing starts
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed_trial]  # only the killed one failed...
    # ...and, a sampled trial, was not re-queued with the params it had drawn: another trial took its place
    assert not [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    keys = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(keys)) == len(keys)  # no trial evaluated twice
    assert {t.user_attrs["worker"].split(":")[-1] for t in complete} >= {str(p.pid) for p in procs[1:]}


def test_local_workers_share_a_journal_study(tmp_path):
    runs, truth = synthetic_problem(300, 3, seed=2)
    result = tune(runs, truth, tmp_path, trials=12, folds=2, workers=2, progress=False, report=False)
    assert result.storage.endswith("optuna.journal")
    study = search.open_study(search.storage_spec(None, tmp_path, workers=2), "blend-final")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert 12 <= states.count(TrialState.COMPLETE) <= 13 and TrialState.RUNNING not in states
    # the spawned worker processes did the trials through the journal file (which of the two
    # takes how many is a race: one may finish these small studies before the other starts)
    spec = search.storage_spec(None, tmp_path, workers=2)
    names = ("blend-fold0", "blend-fold1", "blend-final")
    trials = [t for n in names for t in search.open_study(spec, n).get_trials(deepcopy=False)]
    pids = {t.user_attrs["worker"].split(":")[-1] for t in trials}
    assert pids and str(os.getpid()) not in pids


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="PROMPTBLEND_TEST_PG_URL is not set")
def test_tune_with_postgres_workers_end_to_end(tmp_path):
    runs, truth = synthetic_problem(300, 3, seed=4)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    result = tune(runs, truth, tmp_path, trials=8, folds=2, storage=PG_URL, study=prefix, workers=2,
                  heartbeat=1, progress=False, report=False)
    assert result.storage.startswith("postgresql")
    assert result.studies == [f"{prefix}-fold0", f"{prefix}-fold1", f"{prefix}-final"]
    spec = search.storage_spec(PG_URL, tmp_path, workers=2)
    for name in result.studies:
        study = search.open_study(spec, name)
        c = search.counts(study)
        assert 8 <= c.complete <= 9 and c.running == 0 and c.waiting == 0
    assert (tmp_path / "submission.csv").is_file() and (tmp_path / "best.json").is_file()
    assert not list(tmp_path.glob("optuna.*"))  # nothing local: the study lives in PostgreSQL


_HOLD_A_TRIAL = """
import sys, time, optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ensemble import search
st = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(sys.argv[1])))
search.register_worker(st)
numbers = []
for _ in range(2):  # the enqueued trial first (killed after one of its params), then a sampled one
    t = st.ask()
    t.suggest_float("x", 0, 1)
    t.set_user_attr("worker", search.worker_tag(t.number))
    numbers.append(t.number)
print(*numbers, flush=True)
time.sleep(600)
"""


def test_only_dead_workers_trials_are_failed_and_only_enqueued_ones_requeued(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    spec = search.storage_spec(str(tmp_path / "s.journal"), tmp_path, workers=2)
    study = search.open_study(spec, "shared")
    study.enqueue_trial({"x": 0.25, "y": 0.75}, user_attrs={"source": "gradient"})
    worker = subprocess.Popen([sys.executable, "-c", _HOLD_A_TRIAL, spec.url], cwd=root, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(root)}, text=True)
    try:
        enqueued, held = (int(n) for n in worker.stdout.readline().split())
        starting = study.ask()  # a trial whose worker has not recorded itself yet (just asked)
        # a live worker's trials are left alone, and while one lives an unclaimed trial may be its next one
        assert search.recover_orphans(study) == 0
        assert search.counts(study).running == 3
    finally:
        worker.kill()
        worker.wait()
    # its worker is dead now, and with no other worker alive the unclaimed trial is an orphan too
    assert search.recover_orphans(study) == 3
    trials = study.get_trials(deepcopy=False)
    assert all(trials[n].state == TrialState.FAIL for n in (enqueued, held, starting.number))
    # the enqueued trial (killed after its first param) is queued again with all its params and attributes;
    # the sampled ones are not: the next trial draws them again
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == enqueued and retry.system_attrs["fixed_params"] == {"x": 0.25, "y": 0.75}
    assert retry.user_attrs["source"] == "gradient"
    assert search.recover_orphans(study) == 0  # once


def test_a_lost_warm_start_is_enqueued_again_and_only_then(tmp_path):
    """Killed after failing a dead worker's warm-start trial and before re-queueing it, a run would lose the
    gradient optimum for good: the next run enqueues it again (and only while none is complete or pending)."""
    study = search.open_study(search.storage_spec(None, tmp_path), "s")
    params = {"x": 0.25}
    assert search.enqueue_warm_start(study, params)
    assert not search.enqueue_warm_start(study, params)  # pending: not twice
    trial = study.ask()
    assert trial.user_attrs["source"] == search.WARM_START
    study.tell(trial.number, state=TrialState.FAIL)  # failed as an orphan; the kill came before its retry
    assert search.enqueue_warm_start(study, params)
    (again,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert again.user_attrs["source"] == search.WARM_START and again.system_attrs["fixed_params"] == params
    done = study.ask()
    study.tell(done.number, done.suggest_float("x", 0, 1))
    assert not search.enqueue_warm_start(study, params)  # complete: never again
    fresh = search.open_study(search.storage_spec(None, tmp_path / "other"), "s")
    fresh.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert not search.enqueue_warm_start(fresh, params)  # a study tuned without a warm start stays so


def test_a_killed_sampled_trial_is_drawn_again_as_the_uninterrupted_study_drew_it(tmp_path):
    """Killed between two suggestions of a start-up (independently sampled) trial, the resumed study still
    draws every trial the uninterrupted one drew: the partial trial is failed, not re-queued with half its
    params (which would shift the draws of all later trials)."""
    names = ("a", "b", "c")

    def objective(trial):
        return -sum((trial.suggest_float(n, 0, 1) - 0.3) ** 2 for n in names)

    def drawn(study):
        return [(t.params, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]

    sampler_for = lambda complete: search.create_sampler("tpe", search.trial_seed(0, complete))
    ref = search.open_study(search.storage_spec(None, tmp_path / "ref"), "s")
    search.run_study(ref, objective, 14, sampler_for=sampler_for, orphans=True)
    killed = search.open_study(search.storage_spec(None, tmp_path / "killed"), "s")
    search.run_study(killed, objective, 3, sampler_for=sampler_for, orphans=True)
    killed.sampler = sampler_for(3)
    trial = killed.ask()
    trial.suggest_float("a", 0, 1)  # the kill lands here: one of three params drawn
    trial.set_user_attr("worker", f"{trial.number}@{socket.gethostname()}:1:{_dead_pid()}")
    assert search.recover_orphans(killed) == 1 and search.counts(killed).waiting == 0
    search.run_study(killed, objective, 14, sampler_for=sampler_for, orphans=True)
    assert drawn(killed) == drawn(ref)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_worker_whose_trial_is_failed_under_it_moves_on(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    spec = search.storage_spec(str(tmp_path / "s.journal"), tmp_path, workers=2)
    study = search.open_study(spec, "shared")
    # another process's view of the study (its own storage object and journal worker id)
    other = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(spec.url)))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 2:  # taken for an orphan by the other process while it runs here
            other.tell(trial.number, state=TrialState.FAIL)
            other.enqueue_trial({"x": x}, user_attrs={"retry_of": 2})
        return -((x - 0.5) ** 2)

    search.run_study(study, objective, 5, orphans=True)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 5 and trials[2].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[2].params
