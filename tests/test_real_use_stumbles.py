"""The stumbles of the README's real-use path (issue 27), each fixed and kept fixed.

1. ``ensemble.tune`` without ``--test-runs`` says its submission covers the tuned images; with them it
   is the test set's; a blend that is the mean vector alone can still be applied.
2. ``experiments.leaderboard --runs RUNS --blend TUNED`` applies the blend to the runs given.
3. Progress in a file or CI log is a few summary lines, not carriage-return redraws.
4. Every board has a mean-vector baseline, labelled with where its mean came from.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from ensemble.blend import BlendParams, blend_runs, load_params
from ensemble.synthetic import synthetic_runs, synthetic_truth
from ensemble.tune.__main__ import main as tune_main
from experiments.leaderboard.__main__ import main as board_main
from promptblend.progress import SummaryBar, configure, progress_bar
from promptblend.runkey import run_key
from promptblend.runs import Run, load_run, save_run
from promptblend.submission import read_submission
from promptblend.vectors import l2_normalise

N_VAL, N_TEST, K = 60, 12, 2


def _save_runs(root, runs, fingerprint):
    for j, r in enumerate(runs):
        config = {"layer": j}
        key = run_key(f"pred{j}", config, fingerprint)
        save_run(root / key, Run(r.ids, r.embeddings, {"name": key, "predictor": f"pred{j}", "config": config,
                                                        "fingerprint": fingerprint}))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stumbles")
    y_val, y_test = synthetic_truth(N_VAL, seed=1), synthetic_truth(N_TEST, seed=2)
    test_ids = [f"t{i:03d}" for i in range(N_TEST)]
    _save_runs(root / "val", synthetic_runs(y_val, K, seed=3), "val-fingerprint")
    _save_runs(root / "test", synthetic_runs(y_test, K, seed=4, ids=test_ids), "test-fingerprint")
    save_run(root / "val-truth", Run(synthetic_runs(y_val, 1)[0].ids, y_val, {"name": "truth"}))
    save_run(root / "test-truth", Run(test_ids, y_test, {"name": "truth"}))
    return root


def _tune(root, out, *extra):
    return tune_main(["--runs", str(root / "val"), "--truth", str(root / "val-truth"), "--trials", "5",
                      "--folds", "2", "--no-progress", "--no-report", "--out", str(out), *extra])


def test_tune_says_which_images_its_submission_covers(sets, capsys):
    assert _tune(sets, sets / "tuned-val") == 0
    said = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the console width
    assert "tuned (validation) images, not a test set" in said and "--test-runs" in said
    assert len(read_submission(sets / "tuned-val" / "submission.csv")[0]) == N_VAL
    assert _tune(sets, sets / "tuned", "--test-runs", str(sets / "test")) == 0
    assert "the blend applied to the --test-runs" in " ".join(capsys.readouterr().out.split())
    ids, _ = read_submission(sets / "tuned" / "submission.csv")
    assert sorted(ids) == sorted(load_run(next((sets / "test").iterdir())).ids)


def test_a_mean_vector_only_blend_is_applied(sets):
    runs = [load_run(p) for p in sorted((sets / "test").iterdir()) if p.is_dir()]
    mean = l2_normalise(np.arange(1, 385, dtype=np.float32)[None])[0]
    params = BlendParams(weights={r.name: 0.0 for r in runs}, mean_weight=1.0, normalise=True, mean_vector=mean,
                         sources={})
    blended = blend_runs(params, runs)
    assert blended.ids == runs[0].ids
    np.testing.assert_allclose(blended.embeddings, np.repeat(mean[None], N_TEST, axis=0), atol=1e-6)


def _board(path):
    with open(path, encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def test_leaderboard_applies_the_blend_to_the_runs_given(sets, tmp_path):
    if not (sets / "tuned" / "best.json").is_file():
        assert _tune(sets, sets / "tuned", "--test-runs", str(sets / "test")) == 0
    out = tmp_path / "board"
    code = board_main(["--runs", str(sets / "val"), "--blend", str(sets / "tuned"), "--truth", str(sets / "val-truth"),
                       "--out", str(out), "--no-record", "--no-plots", "--splits", "50"])
    assert code == 0  # tuned/submission.csv covers the test images; the blend was applied to the validation runs
    rows = _board(out / "leaderboard.csv")
    runs = [load_run(p) for p in sorted((sets / "val").iterdir()) if p.is_dir()]
    blended = blend_runs(load_params(sets / "tuned"), runs)
    truth = load_run(sets / "val-truth").select(blended.ids).embeddings
    want = float(np.mean(np.sum(blended.embeddings * l2_normalise(truth), axis=1)))
    assert float(rows["tuned"]["score"]) == pytest.approx(want, abs=1e-5)


def test_every_board_has_a_labelled_mean_vector_baseline(sets, tmp_path):
    if not (sets / "tuned" / "best.json").is_file():
        assert _tune(sets, sets / "tuned", "--test-runs", str(sets / "test")) == 0
    common = ["--truth", str(sets / "test-truth"), "--no-record", "--no-plots", "--splits", "50"]
    assert board_main(["--runs", str(sets / "test"), "--blend", str(sets / "tuned"), "--out", str(tmp_path / "a"),
                       *common]) == 0
    rows = _board(tmp_path / "a" / "leaderboard.csv")
    base = [n for n in rows if rows[n]["kind"] == "baseline"]
    assert base == ["mean (val)"], list(rows)
    mean = np.load(sets / "tuned" / "mean_vector.npy")
    truth = l2_normalise(load_run(sets / "test-truth").embeddings)
    assert float(rows[base[0]]["score"]) == pytest.approx(float(np.mean(truth @ l2_normalise(mean[None])[0])), abs=1e-5)
    assert board_main(["--runs", str(sets / "test"), "--out", str(tmp_path / "b"), *common]) == 0
    assert _board(tmp_path / "b" / "leaderboard.csv")["mean (board)"]["kind"] == "baseline"


def test_progress_in_a_file_is_a_few_lines_with_rate_not_redraws():
    stream = io.StringIO()
    configure(stream)
    try:
        bar = progress_bar(total=5000, desc="images", unit="img")
        assert isinstance(bar, SummaryBar)
        for _ in range(5000):
            bar.update(1)
        bar.close()
        for _ in progress_bar(range(3), desc="prompts", unit="prompt"):
            pass
        quiet = progress_bar(total=3, desc="off", disable=True)
        quiet.update(3)
        quiet.close()
    finally:
        configure(None)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("images: 5,000 img in ") and "img/s" in lines[0], lines
    assert lines[1].startswith("prompts: 3 prompt in ")


def test_run_names_are_short_unique_in_their_folder_and_keep_the_key(tmp_path):
    """5. Names fit a table cell: predictor + config tag; the same predictor and config on a second image set
    in the same folder gets the image set's tag; ``meta.json`` keeps the full key (the folder name)."""
    from promptblend.runs import build_run

    ids = ["a", "b", "c"]
    rows = np.eye(3, 384, dtype=np.float32)
    runs = [build_run(tmp_path, "clip-interrogator-tiny", {"mode": "best"}, ids, fp, lambda s, e: (rows[s:e], None),
                      progress=False) for fp in ("c8d0fb2cde7c8faa", "d341311a749a0000")]
    first, second = (r.name for r in runs)
    assert first == "clip-interrogator-tiny-" + runs[0].path.name.split("-")[3][:6]
    assert second == first + "@d34131" and len(second) < 40
    assert [r.meta["key"] for r in runs] == [r.path.name for r in runs]
    again = build_run(tmp_path, "clip-interrogator-tiny", {"mode": "best"}, ids, "c8d0fb2cde7c8faa",
                      lambda s, e: (rows[s:e], None), progress=False)
    assert again.name == first and again.meta.get("cache_hit")
    old = tmp_path / "old-run"
    save_run(old, Run(ids, rows, {"name": "knn-tiny-76ad1e234b09-c8d0fb2cde7c", "predictor": "knn-tiny"}))
    assert load_run(old).name == "knn-tiny-76ad1e234b09-c8d0fb2cde7c"  # runs cached before keep loading


def test_the_board_labels_its_image_set_like_the_runs(sets, tmp_path):
    from experiments.entries import load_entries, score_entries

    scored = score_entries(load_entries([sets / "test"]), load_run(sets / "test-truth"))
    assert scored.image_set.startswith("test-f") and len(scored.image_set) == 16
