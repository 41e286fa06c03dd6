"""Two writers at once on one run folder, one bank folder and one Optuna study: both succeed, one result."""

from __future__ import annotations

import json
import subprocess

import pytest
from harness import python_m, record, snapshot, start, temp_litter

pytestmark = pytest.mark.slow


def _both(cmds: list[list[str]]) -> list[tuple[int, str, str]]:
    procs = [start(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    outs = [p.communicate(timeout=900) for p in procs]
    return [(p.returncode, o.decode(), e.decode()) for p, (o, e) in zip(procs, outs)]


def test_two_runs_into_one_run_folder(inputs, tmp_path):
    from promptblend.runs import list_runs, load_run

    cmd = python_m("predictors.run", "captioner-tiny", "--images", inputs / "bad" / "images_small", "--out",
                   tmp_path / "runs", "--quiet", "--workers", "0", "--threads", "1")
    results = _both([cmd, cmd])
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    (run,) = list_runs(tmp_path / "runs")
    assert len(load_run(run)) == 8 and not temp_litter(tmp_path / "runs")
    left = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.suffix != ".log")
    assert left == [run.name]  # no partial, lock or temp left (the command's log aside)
    assert sorted("cache hit" in r[1] for r in results) == [False, True]  # one computed, the other waited for it
    record("| two predictors.run, one --out | both exit 0, one computed, the other a cache hit; nothing left over |")


def test_two_builds_into_one_bank_folder(inputs, tmp_path):
    args = ("--prompts", inputs / "prompts.txt", "--shard-size", "16", "--batch-size", "16", "--values-backend", "torch")
    results = _both([python_m("index.build", *args, "--out", tmp_path / "bank")] * 2)
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    single = python_m("index.build", *args, "--out", tmp_path / "alone")
    assert _both([single])[0][0] == 0
    assert snapshot(tmp_path / "bank") == snapshot(tmp_path / "alone")
    record("| two index.build, one --out | both exit 0; the bank equals a single build's |")


def test_two_tuners_on_one_study(inputs, tmp_path):
    import optuna

    journal = tmp_path / "study.journal"
    base = ("--runs", inputs / "runs", "--truth", inputs / "truth_run", "--trials", "20", "--folds", "0",
            "--no-report", "--no-progress", "--storage", journal, "--study", "shared")
    results = _both([python_m("ensemble.tune", *base, "--out", tmp_path / f"out{k}", "--seed", str(k)) for k in (0, 1)])
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names, "the study exists"
    complete = {n: len(optuna.load_study(study_name=n, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
                for n in names}
    assert all(c >= 20 for c in complete.values()), complete
    for k in (0, 1):
        assert json.loads((tmp_path / f"out{k}" / "best.json").read_text())["weights"]
    record(f"| two ensemble.tune, one journal study | both exit 0; complete trials per study {complete} |")
