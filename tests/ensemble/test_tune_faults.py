"""ensemble.tune under faults: --out on a file, a full disk (RLIMIT_FSIZE, EFBIG), a SIGKILL mid-study."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from ensemble.synthetic import synthetic_problem
from ensemble.tune import tune
from ensemble.tune.__main__ import main
from promptblend.runs import save_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Synthetic runs and truth saved as folders (what the CLI reads)."""
    root = tmp_path_factory.mktemp("faults")
    runs, truth = synthetic_problem(200, 3, seed=9)
    for r in runs:
        save_run(root / "runs" / r.name, r)
    save_run(root / "truth", truth)
    return root, runs, truth


def _cli(root: Path, out: Path, *extra: str, file_limit: int | None = None, wait: bool = True):
    """``python -m ensemble.tune`` on the saved runs, optionally under a file-size limit (EFBIG, no SIGXFSZ)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    cmd = [sys.executable, "-m", "ensemble.tune", "--runs", str(root / "runs"), "--truth", str(root / "truth"),
           "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    kwargs = dict(cwd=ROOT, env=env, preexec_fn=limit if file_limit else None)
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("INFO ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-2000:]
    return lines[0]


def test_out_on_a_file_is_a_named_error(saved, tmp_path, capsys):
    root, _, _ = saved
    (tmp_path / "taken").write_text("not a folder\n")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert main(["--runs", str(root / "runs"), "--truth", str(root / "truth"), "--out", str(out),
                     "--trials", "2", "--folds", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "taken" in err[0] and "file" in err[0], err
    assert (tmp_path / "taken").read_text() == "not a folder\n"


def test_full_disk_under_the_study_storage(saved, tmp_path):
    root, _, _ = saved
    out = tmp_path / "out"
    done = _cli(root, out, "--trials", "1000", "--folds", "0", file_limit=300_000)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "disk full" in line and "study storage" in line and "need about" in line, line
    assert not (out / "best.json").exists()


def test_full_disk_while_writing_the_outputs(saved, tmp_path):
    root, _, _ = saved
    out = tmp_path / "out"
    done = _cli(root, out, "--trials", "3", "--folds", "0", "--no-report", file_limit=1_000_000)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "file size limit exceeded" in line and "submission.csv" in line and "need about" in line, line
    assert not (out / "submission.csv").exists() and not (out / "best.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary litter


def _complete(db: Path, name: str) -> int:
    """Complete trials of study ``name``, read without writing (the tune may still be creating the tables)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(
                "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ? AND state = 'COMPLETE'",
                (name,),
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def _comparable(out: Path) -> dict:
    doc = json.loads((out / "best.json").read_text())
    for volatile in ("wall_s", "timings", "storage"):
        doc.pop(volatile)
    return doc


@pytest.mark.slow
def test_sigkill_mid_study_then_resume_gives_the_uninterrupted_result(saved, tmp_path):
    root, runs, truth = saved
    trials, folds = 120, 2
    ref = tmp_path / "ref"
    tune(runs, truth, ref, trials=trials, folds=folds, warm_start=False, report=False, progress=False)
    out = tmp_path / "killed"
    args = ("--trials", str(trials), "--folds", str(folds), "--no-warm-start", "--no-report")
    proc = _cli(root, out, *args, wait=False)
    db = out / "optuna.db"
    deadline = time.time() + 300
    while not db.exists() or _complete(db, "blend-fold1") < 20:
        assert proc.poll() is None, "the tune finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert _complete(db, "blend-fold1") < trials and _complete(db, "blend-final") == 0
    assert not (out / "best.json").exists()
    done = _cli(root, out, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _comparable(out) == _comparable(ref)
    for name in ("submission.csv", "mean_vector.npy", "folds.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    study = optuna.load_study(study_name="blend-final", storage=f"sqlite:///{db}")
    assert all(t.user_attrs.get("source") != "gradient" for t in study.trials)  # the warm start was off


def _kill_when(proc: subprocess.Popen, ready) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or let it end by itself)."""
    deadline = time.time() + 300
    while not ready() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _outputs(folder: Path) -> list[str]:
    """The files of a tuning folder, its log (written when the command exits: not after a kill) left out."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".log")


def test_a_published_folder_holds_only_the_finished_outputs(saved, tmp_path):
    """best.json marks a finished run: killed right after it, no SQLite -wal/-shm lies beside it; a rerun
    into the folder withdraws it while it works (storage open, outputs rewritten), then publishes again."""
    root, _, _ = saved
    args = ("--trials", "15", "--folds", "0", "--no-warm-start", "--no-report")
    ref = tmp_path / "ref"
    assert _cli(root, ref, *args).returncode == 0
    finished = _outputs(ref)
    assert finished == ["best.json", "mean_vector.npy", "optuna.db", "submission.csv"]
    out = tmp_path / "out"
    _kill_when(_cli(root, out, *args, wait=False), lambda: (out / "best.json").exists())
    assert _outputs(out) == finished
    assert _comparable(out) == _comparable(ref)
    _kill_when(_cli(root, out, *args, wait=False), lambda: (out / "optuna.db-wal").exists())
    assert not (out / "best.json").exists()  # the study storage was open: not published
    assert _cli(root, out, *args).returncode == 0
    assert _outputs(out) == finished and _comparable(out) == _comparable(ref)
