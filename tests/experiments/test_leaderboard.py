"""End to end: the leaderboard API and ``python -m experiments.leaderboard``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from lb_synthetic import truth_run, with_cosines
from PIL import Image

from experiments import entry_from_arrays, load_entries
from experiments.leaderboard import leaderboard, main
from experiments.record import history
from promptblend.errors import ConfigError
from promptblend.runs import Run, save_run
from promptblend.submission import write_submission

N = 300


def _cosines(seed: int, mean: float) -> np.ndarray:
    """Per-image cosines: a difficulty shared by all entries plus the entry's own noise."""
    base = np.random.default_rng(0).uniform(0.3, 0.9, N)
    return np.clip(base - 0.6 + mean + np.random.default_rng(seed).normal(0, 0.1, N), -1, 1)


@pytest.fixture
def workspace(tmp_path):
    truth = truth_run(N)
    save_run(tmp_path / "truth", truth)
    runs = tmp_path / "runs"
    t64 = truth.embeddings.astype(np.float64)
    for i, mean in enumerate([0.62, 0.57, 0.5]):
        emb = with_cosines(t64, _cosines(i, mean), np.random.default_rng(10 + i))
        save_run(runs / f"model{i}", Run(truth.ids, emb, {"name": f"model{i}", "predictor": f"p{i}", "config": {"i": i}, "wall_time_s": 1.5}))
    blend = runs / "blend"
    write_submission(blend / "submission.csv", truth.ids, with_cosines(t64, _cosines(7, 0.66), np.random.default_rng(7)))
    (blend / "best.json").write_text(json.dumps({"weights": {"model0": 0.6, "model1": 0.4}, "in_sample": 0.66, "out_of_fold": 0.635}))
    outside = tmp_path / "outside.csv"
    write_submission(outside, truth.ids, with_cosines(t64, _cosines(8, 0.53), np.random.default_rng(8)))
    return tmp_path, truth, runs, outside


def test_cli_end_to_end(workspace, capsys):
    tmp, truth, runs, outside = workspace
    out, db = tmp / "lb", tmp / "rec.sqlite"
    (tmp / "public.txt").write_text("imgId\n" + "\n".join(truth.ids[:60]) + "\n")
    argv = ["--runs", str(runs), "--truth", str(tmp / "truth"), "--out", str(out), "--submission", f"outside={outside}",
            "--compare", "blend", "model0", "--splits", "200", "--record", str(db)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Leaderboard: 300 images, 60 public / 240 private, 200 random splits" in text
    assert "tuning honesty, blend: in-sample 0.66000 vs out-of-fold 0.63500" in text
    assert "blend vs model0: difference" in text
    table = pd.read_csv(out / "leaderboard.csv")
    assert list(table["name"]) == ["blend", "model0", "model1", "outside", "model2"]
    assert (table["ci_low"] <= table["score"]).all() and (table["score"] <= table["ci_high"]).all()
    assert table.loc[0, "overfit"] == pytest.approx(0.025)
    assert table["p_first_private"].sum() == pytest.approx(1)
    for name in ("intervals", "public_private", "ranks", "per_image_hist"):
        with Image.open(out / f"{name}.png") as im:
            assert im.width > 500 and im.height > 250
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] == "blend" and summary["comparison"]["a"] == "blend"
    # a second session with a fixed split: history grows, the same entries are recognised
    assert main(argv[:-4] + ["--public-ids", str(tmp / "public.txt"), "--splits", "100", "--record", str(db), "--no-plots"]) == 0
    assert "fixed split, boards bootstrap-resampled 100 times" in capsys.readouterr().out
    rows = history(db)
    assert len(rows) == 5 and all(r["times_seen"] == 2 for r in rows)
    assert [r["name"] for r in rows if r["best"]] == ["blend"]


def test_api_with_in_memory_entries(tmp_path):
    truth = truth_run(N)
    t64 = truth.embeddings.astype(np.float64)
    entries = [entry_from_arrays(f"e{i}", truth.ids, with_cosines(t64, _cosines(i, 0.6 - 0.05 * i), np.random.default_rng(i))) for i in range(3)]
    res = leaderboard(entries, truth, out=None, splits=100, record_path=False, progress=False, quiet=True)
    assert res.best == "e0" and res.files == {} and res.session_id is None
    # a blend tuned without CV has no out-of-fold score: reports and plots still work
    entries[0].tuning = {"in_sample": 0.61, "out_of_fold": None, "overfit": None}
    tuned = leaderboard(entries, truth, out=tmp_path / "lb", splits=50, record_path=False, progress=False, quiet=True)
    assert tuned.rows[0]["in_sample"] == 0.61 and tuned.rows[0]["overfit"] is None and tuned.files["intervals"].is_file()
    assert res.simulation.splits == 100 and res.scored.scores.shape == (3, N)
    with pytest.raises(ConfigError, match="not in the scored image set"):
        leaderboard(entries, truth, public_ids=["nope"], record_path=False, quiet=True)


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.leaderboard", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_bad_input_one_line(workspace, capsys):
    tmp, truth, runs, _ = workspace
    (tmp / "empty").mkdir()
    r = _cli("--runs", str(tmp / "empty"), "--truth", str(tmp / "truth"), "--no-record", cwd=tmp)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "holds no runs" in r.stderr
    save_run(tmp / "small_truth", truth.select(truth.ids[:100]))
    assert main(["--runs", str(runs), "--truth", str(tmp / "small_truth"), "--no-record"]) == 2
    assert "error: truth" in capsys.readouterr().err
    assert main(["--runs", str(runs), "--truth", str(tmp / "truth"), "--compare", "model", "blend", "--no-record"]) == 2
    assert "matches several entries" in capsys.readouterr().err
    assert main(["--runs", str(runs), "--truth", str(tmp / "nope.csv"), "--no-record"]) == 2
    assert "truth not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0


def test_kaggle_sample_fixed_truth_run(kaggle_sample, tmp_path):
    """The competition's sample submission as truth and as entry: a perfect entry on 7 images."""
    from promptblend.submission import read_submission

    ids, emb = read_submission(kaggle_sample / "sample_submission.csv")
    entries = load_entries(submissions={"sample": kaggle_sample / "sample_submission.csv"})
    res = leaderboard(entries, Run(ids, emb, {"name": "truth"}), out=tmp_path / "lb", splits=50, record_path=False, quiet=True)
    assert res.rows[0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert res.simulation.n_public == 1 and res.simulation.n_private == 6


@pytest.mark.slow
def test_kaggle_sample_scores_one_against_prompts(kaggle_sample, tmp_path):
    """Truth embedded from the sample's prompts.csv with the scoring model: the sample submission scores 1.0."""
    entries = load_entries(submissions={"sample": kaggle_sample / "sample_submission.csv"})
    res = leaderboard(entries, kaggle_sample / "prompts.csv", out=tmp_path / "lb", splits=50, record_path=tmp_path / "r.sqlite", quiet=True)
    assert res.rows[0]["score"] == pytest.approx(1.0, abs=1e-5)
