"""``python -m ensemble.blend``: a tuned blend applied to the runs of another image set.

Runs are saved as ``predictors.run`` saves them (name = predictor + config hash + image-set
fingerprint, so validation and test runs of one predictor have different names).
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ensemble.blend import (
    BankChangedError,
    BankMissingError,
    ImageSetMismatchError,
    MissingRunError,
    RunIdsMismatchError,
    apply_blend,
    blend_to_submission,
    load_params,
)
from ensemble.blend.__main__ import main as blend_main
from ensemble.synthetic import synthetic_runs, synthetic_truth
from ensemble.tune.__main__ import main as tune_main
from promptblend.imagesets import open_image_set
from promptblend.runkey import run_key
from promptblend.runs import Run, load_run, save_run
from promptblend.submission import read_submission
from promptblend.vectors import l2_normalise

N_VAL, N_TEST, K = 200, 24, 3


def _save_runs(root, runs, fingerprint):
    """Save synthetic runs as predictors ``pred0..`` with a config each, on image set ``fingerprint``."""
    for j, r in enumerate(runs):
        config = {"layer": j, "size": "tiny"}
        key = run_key(f"pred{j}", config, fingerprint)
        meta = {"name": key, "predictor": f"pred{j}", "config": config, "fingerprint": fingerprint}
        save_run(root / key, Run(r.ids, r.embeddings, meta))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("blend")
    images = root / "test-images"
    images.mkdir()
    for i in range(N_TEST):
        Image.new("RGB", (8, 8), (i * 9 % 256, 30, 60)).save(images / f"t{i:03d}.png")
    test_fp = open_image_set(images).fingerprint()
    y_val, y_test = synthetic_truth(N_VAL, seed=3), synthetic_truth(N_TEST, seed=4)
    _save_runs(root / "val", synthetic_runs(y_val, K, seed=5), "val-set-fingerprint")
    ids = open_image_set(images).ids
    _save_runs(root / "test", synthetic_runs(y_test, K, seed=6, ids=ids), test_fp)
    save_run(root / "truth", Run(synthetic_runs(y_val, 1)[0].ids, y_val, {"name": "truth"}))
    rng = np.random.default_rng(0)
    (root / "bank").mkdir()
    values = np.concatenate([y_val[:80], y_test[:12], l2_normalise(rng.normal(size=(100, 384)))])
    np.save(root / "bank" / "values.npy", values.astype(np.float32))
    code = tune_main(["--runs", str(root / "val"), "--truth", str(root / "truth"), "--test-runs", str(root / "test"),
                      "--trials", "5", "--folds", "2", "--index", str(root / "bank"), "--out", str(root / "tuned"),
                      "--no-progress", "--no-report"])
    assert code == 0
    return root, images


def _test_runs(root):
    return [load_run(p) for p in sorted((root / "test").iterdir())]


def test_best_json_records_what_blend_needs(tuned):
    root, _ = tuned
    doc = json.loads((root / "tuned" / "best.json").read_text())
    assert doc["image_set"] == "val-set-fingerprint" and doc["snap_threshold"] is not None
    assert doc["bank"] == str(root / "bank") and len(doc["bank_digest"]) == 64
    for name in doc["weights"]:
        src = doc["sources"][name]
        assert name.startswith(src["predictor"]) and src["config_hash"] in name


def test_blend_reproduces_the_tuners_test_submission(tuned, capsys, tmp_path):
    root, images = tuned
    extra = load_run(root / "val" / next(p.name for p in (root / "val").iterdir()))
    unknown = Run(extra.ids, extra.embeddings, {**extra.meta, "predictor": "other", "name": "other-run"})
    save_run(tmp_path / "other-run", unknown)
    out = tmp_path / "submission.csv"
    code = blend_main(["--blend", str(root / "tuned"), "--runs", str(root / "test"), str(tmp_path / "other-run"),
                       "--out", str(out), "--images", str(images)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ignored other-run" in printed and f"{N_TEST} images blended from {K} runs" in printed
    ids, emb = read_submission(out)
    want_ids, want = read_submission(root / "tuned" / "submission.csv")
    assert ids == want_ids
    np.testing.assert_allclose(emb, want, atol=1e-6)


def test_images_pick_the_runs_of_their_set(tuned, tmp_path):
    root, images = tuned
    both = tmp_path / "all-runs"
    shutil.copytree(root / "val", both)
    shutil.copytree(root / "test", both, dirs_exist_ok=True)
    assert blend_main(["--blend", str(root / "tuned"), "--runs", str(both), "--out", str(tmp_path / "a.csv")]) == 2
    assert not (tmp_path / "a.csv").exists()
    assert blend_main(["--blend", str(root / "tuned"), "--runs", str(both), "--out", str(tmp_path / "b.csv"),
                       "--images", str(images)]) == 0
    np.testing.assert_allclose(read_submission(tmp_path / "b.csv")[1],
                               read_submission(root / "tuned" / "submission.csv")[1], atol=1e-6)


def _case(name, root, tmp_path):
    """(runs, --index or None, error class) of one bad case; may move the bank away."""
    runs = _test_runs(root)
    if name == "missing predictor":
        return runs[:-1], None, MissingRunError
    if name == "another image set":
        val = [load_run(p) for p in sorted((root / "val").iterdir())]
        return [*runs[:-1], val[-1]], None, ImageSetMismatchError
    if name == "ids differ":
        short = runs[1].select(runs[1].ids[:-3])
        return [runs[0], short, runs[2]], None, RunIdsMismatchError
    moved = tmp_path / "bank-copy"
    shutil.copytree(root / "bank", moved)
    if name == "bank missing":
        return runs, tmp_path / "no-bank", BankMissingError
    np.save(moved / "values.npy", np.load(moved / "values.npy")[::-1].copy())  # rebuilt: other rows
    return runs, moved, BankChangedError


@pytest.mark.parametrize("case", ["missing predictor", "another image set", "ids differ", "bank missing", "bank rebuilt"])
def test_bad_cases_fail_with_their_named_error_and_write_nothing(tuned, tmp_path, capsys, case):
    root, _ = tuned
    runs, index, error = _case(case, root, tmp_path)
    params = load_params(root / "tuned")
    out = tmp_path / "submission.csv"
    with pytest.raises(error):
        blend_to_submission(params, runs, out, index=index)
    assert not out.exists() and not list(tmp_path.glob(".submission.csv*"))
    for r in runs:
        save_run(tmp_path / "runs" / r.name, r)
    argv = ["--blend", str(root / "tuned"), "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert blend_main(argv + (["--index", str(index)] if index else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert not out.exists()


def test_a_moved_bank_is_found_with_index(tuned, tmp_path):
    root, _ = tuned
    shutil.copytree(root / "bank", tmp_path / "moved")
    params = load_params(root / "tuned")
    params.bank = str(tmp_path / "gone")
    with pytest.raises(BankMissingError):
        blend_to_submission(params, _test_runs(root), tmp_path / "x.csv")
    blend_to_submission(params, _test_runs(root), tmp_path / "x.csv", index=tmp_path / "moved")
    np.testing.assert_allclose(read_submission(tmp_path / "x.csv")[1],
                               read_submission(root / "tuned" / "submission.csv")[1], atol=1e-6)


def test_a_model_folder_moved_elsewhere_still_matches_by_content():
    from ensemble.blend import BlendParams, run_source, select_runs

    rows = np.eye(4, 384, dtype=np.float32)
    ids = ["a", "b", "c", "d"]

    def run(path, digest, fingerprint):
        config = {"checkpoint": path, "seed": 0, "_inputs": {"checkpoint": digest}}
        return Run(ids, rows, {"name": f"reg-{path}", "predictor": "clip-regressor", "config": config,
                               "fingerprint": fingerprint})

    home = run("/home/me/regressor", "d1", "val")
    params = BlendParams({home.name: 1.0}, sources={home.name: run_source(home)})
    notebook = run("/kaggle/input/regressor", "d1", "test")  # same weights, another path
    used, ignored, matched = select_runs(params, [notebook])
    assert list(used) == [home.name] and used[home.name] is notebook and ignored == []
    assert matched == {home.name: "predictor + config"}
    retrained = run("/kaggle/input/regressor", "d2", "test")  # other weights: not the blend's predictor
    with pytest.raises(MissingRunError, match="clip-regressor"):
        select_runs(params, [retrained])


def test_runs_sharing_a_predictor_and_config_match_by_name(tmp_path, capsys):
    """Imported submissions are all ``external`` with one config: the blend tuned on them applies to them."""
    y = synthetic_truth(120, seed=8)
    for j, r in enumerate(synthetic_runs(y, K, seed=9)):
        meta = {"name": f"submission-{j}", "predictor": "external", "config": {"format": "csv"}, "fingerprint": f"c{j}"}
        save_run(tmp_path / "subs" / f"submission-{j}", Run(r.ids, r.embeddings, meta))
    save_run(tmp_path / "truth", Run(synthetic_runs(y, 1)[0].ids, y, {"name": "truth"}))
    assert tune_main(["--runs", str(tmp_path / "subs"), "--truth", str(tmp_path / "truth"), "--trials", "5",
                      "--folds", "0", "--out", str(tmp_path / "tuned"), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    out = tmp_path / "blend.csv"
    assert blend_main(["--blend", str(tmp_path / "tuned"), "--runs", str(tmp_path / "subs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    weighted = [n for n, w in load_params(tmp_path / "tuned").weights.items() if w]
    for name in weighted:
        assert f"{name}: run {name} (matched by run name)" in printed
    runs = [load_run(p) for p in sorted((tmp_path / "subs").iterdir())]
    np.testing.assert_allclose(read_submission(out)[1], apply_blend(load_params(tmp_path / "tuned"), runs), atol=1e-6)
