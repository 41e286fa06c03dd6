"""End to end: the leaderboard API and ``python -m experiments.leaderboard``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from drawn import assert_drawn
from lb_synthetic import entry_cosines, truth_run, with_cosines

from experiments import entry_from_arrays, load_entries
from experiments.leaderboard import leaderboard, record_result, write_outputs
from experiments.leaderboard.__main__ import main
from experiments.record import history
from promptblend.errors import ConfigError
from promptblend.runs import Run, save_run

N = 300


def _cosines(seed: int, mean: float) -> np.ndarray:
    return entry_cosines(N, seed, mean)


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
    base = "mean (board)"  # every board has the baseline, labelled
    assert [n for n in table["name"] if n != base] == ["blend", "model0", "model1", "outside", "model2"]
    assert base in list(table["name"])
    assert (table["ci_low"] <= table["score"]).all() and (table["score"] <= table["ci_high"]).all()
    assert table.loc[0, "overfit"] == pytest.approx(0.025)
    assert table["p_first_private"].sum() == pytest.approx(1)
    for name in ("intervals", "public_private", "ranks", "per_image_hist"):
        assert_drawn(out / f"{name}.png", min_size=(500, 250))
    page = (out / "leaderboard.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http://" not in page and "https://" not in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] == "blend" and summary["comparison"]["a"] == "blend"
    # a second session with a fixed split: history grows, the same entries are recognised
    assert main(argv[:-4] + ["--public-ids", str(tmp / "public.txt"), "--splits", "100", "--record", str(db), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "fixed split, boards bootstrap-resampled 100 times" in text and "recorded session 2" in text
    rows = history(db)
    assert len(rows) == 6 and all(r["times_seen"] == 2 for r in rows)
    assert [r["name"] for r in rows if r["best"]] == ["blend"]
    page = (out / "leaderboard.html").read_text()
    assert "data:image/png" not in page and "Intervals and shake-up" not in page
    assert "Every entry ever scored (6; best in bold)" in page


def test_api_with_in_memory_entries(tmp_path):
    truth = truth_run(N)
    t64 = truth.embeddings.astype(np.float64)
    entries = [entry_from_arrays(f"e{i}", truth.ids, with_cosines(t64, _cosines(i, 0.6 - 0.05 * i), np.random.default_rng(i))) for i in range(3)]
    res = leaderboard(entries, truth, splits=100, progress=False)
    assert res.best == "e0" and res.order == [0, 1, 2] and not list(tmp_path.iterdir())
    # a blend tuned without CV has no out-of-fold score: reports and plots still work
    entries[0].tuning = {"in_sample": 0.61, "out_of_fold": None, "overfit": None}
    tuned = leaderboard(entries, truth, splits=50, progress=False)
    files = write_outputs(tuned, tmp_path / "lb")
    assert tuned.rows[0]["in_sample"] == 0.61 and tuned.rows[0]["overfit"] is None
    assert sorted(files) == ["csv", "histogram", "html", "intervals", "public_private", "ranks", "summary"]
    assert all(p.is_file() and p.parent == tmp_path / "lb" for p in files.values())
    assert res.simulation.splits == 100 and res.scored.scores.shape == (3, N)
    with pytest.raises(ConfigError, match="not in the scored image set"):
        leaderboard(entries, truth, public_ids=["nope"])


def test_record_result_is_a_separate_call(tmp_path):
    truth = truth_run(N)
    t64 = truth.embeddings.astype(np.float64)
    entries = [entry_from_arrays(f"e{i}", truth.ids, with_cosines(t64, _cosines(i, 0.6 - 0.05 * i), np.random.default_rng(i))) for i in range(2)]
    res = leaderboard(entries, truth, splits=20, progress=False)
    db = tmp_path / "rec.sqlite"
    assert not db.exists()
    sid = record_result(res, db, out=tmp_path / "lb")
    rows = history(db, res.scored.image_set)
    assert sid == 1 and [r["name"] for r in rows] == ["e0", "e1"]
    assert rows[0]["score"] == pytest.approx(res.rows[0]["score"]) and rows[0]["last_session"] == sid


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
    res = leaderboard(entries, Run(ids, emb, {"name": "truth"}), splits=50, progress=False)
    assert res.rows[0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert res.simulation.n_public == 1 and res.simulation.n_private == 6


@pytest.mark.slow
def test_kaggle_sample_scores_one_against_prompts(kaggle_sample, tmp_path):
    """Truth embedded from the sample's prompts.csv with the scoring model: the sample submission scores 1.0."""
    entries = load_entries(submissions={"sample": kaggle_sample / "sample_submission.csv"})
    res = leaderboard(entries, kaggle_sample / "prompts.csv", splits=50, progress=False)
    assert res.rows[0]["score"] == pytest.approx(1.0, abs=1e-5)
    record_result(res, tmp_path / "r.sqlite")
    assert history(tmp_path / "r.sqlite")[0]["name"] == "sample"
