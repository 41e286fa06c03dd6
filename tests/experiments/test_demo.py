"""The built-in demo end to end on a reduced task: trains, predicts, indexes, tunes, scores; then reuses it all."""

from __future__ import annotations

import json
import time

import pytest

from experiments.demo import run_demo
from experiments.demo.__main__ import main as demo_main
from experiments.demo.clip_train import ClipTrainConfig
from experiments.demo.data import DataConfig
from experiments.demo.pipeline import BASELINE, BLEND, PREDICTORS, DemoSize
from promptblend.submission import check_submission

TINY = DemoSize(
    "test",
    DataConfig(n_pairs=300, n_bank=150),
    ClipTrainConfig(epochs=10, batch_size=64, warmup_steps=5),
    regressor_epochs=10,
    clipcap_epochs=4,
    trials=20,
    folds=3,
    splits=100,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    bank = root / "my-bank.txt"
    bank.write_text("a red ball in a green meadow, highly detailed\nan oil painting of a blue star at sunset\n")
    t0 = time.perf_counter()
    first = run_demo(out=root / "out", size=TINY, bank=bank, cache=root / "cache", progress=False, quiet=True)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = run_demo(out=root / "out2", size=TINY, bank=bank, cache=root / "cache", progress=False, quiet=True)
    return root, first, second, first_s, time.perf_counter() - t0


def test_every_entry_is_scored_on_the_test_split(demo):
    _, first, _, _, _ = demo
    assert set(first.scores) == {*PREDICTORS, BASELINE, BLEND}
    for row in first.table:
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
        assert 0 < row["score"] < 1
    assert first.blend_val_oof is not None and first.blend_val_oof <= first.blend_val_in_sample + 0.05


def test_blend_beats_every_predictor_on_held_out_images(demo):
    _, first, _, _, _ = demo
    assert first.blend_beats_all, first.scores
    assert first.scores["clip-regressor"] > first.scores[BASELINE], first.scores


def test_submission_is_valid_and_reports_are_written(demo):
    root, first, _, _, _ = demo
    images = root / "cache"
    test_dirs = list(images.glob("data-*/test/images"))
    assert len(test_dirs) == 1
    check_submission(first.submission, images=test_dirs[0])
    out = root / "out"
    saved = json.loads((out / "demo.json").read_text())
    assert saved["scores"] == pytest.approx(first.scores)
    for name in ("leaderboard/leaderboard.csv", "leaderboard/intervals.png", "tune/best.json"):
        assert (out / name).is_file(), name


def test_second_run_reuses_the_cache(demo):
    _, first, second, first_s, second_s = demo
    assert second.scores == pytest.approx(first.scores)
    assert second_s < first_s / 2


def test_cli_rejects_a_missing_bank(tmp_path, capsys):
    assert demo_main(["--bank", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "prompt bank not found" in capsys.readouterr().err
