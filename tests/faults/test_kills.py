"""Seeded random SIGKILLs over every long-running CLI; each chain of kills is resumed to the end and the
outputs compared byte for byte (JSON/CSV without clocks) with an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import kill_campaign, python_m, record, snapshot, wall

pytestmark = pytest.mark.slow

def _campaign(name, make_cmd, output, tmp_path, seed, kills, skip=(), published=None, warm=False):
    """Reference run, then the kill chains; asserts and records the counts (a row of
    | command | kills | resumes | identical | different | corrupt | litter | finished before the kill |).

    With ``warm`` a first run fills the caches (CLIP features, tokenizer, page cache of the models) and must
    give the same output: the second one times the kill window.
    """
    if warm:
        res, _ = wall(make_cmd(tmp_path / "cold"))
        assert res.returncode == 0, res.stderr[-3000:]
    res, seconds = wall(make_cmd(tmp_path / "reference"))
    assert res.returncode == 0, res.stderr[-3000:]
    reference = snapshot(output(tmp_path / "reference"), skip)
    if warm:
        assert snapshot(output(tmp_path / "cold"), skip) == reference, "two uninterrupted runs differ"
    report = kill_campaign(name, make_cmd, output, tmp_path, reference, seed, kills, (0.2 * seconds, 0.8 * seconds),
                           skip=skip, published=published)
    record(f"{report.line()} reference {seconds:.1f} s")
    for note in report.notes:
        record(f"  {name}: {note}")
    assert report.kills >= kills, f"only {report.kills} kills landed before the command finished"
    assert report.corrupt == 0, report.notes
    assert report.identical == report.resumes, report.notes
    assert report.litter == 0, report.notes
    return report


def test_predictors_run(inputs, tmp_path):
    cmd = lambda out: python_m("predictors.run", "captioner-tiny", "--images", inputs / "images", "--out", out,
                               "--quiet", "--workers", "0", "--threads", "1")
    run_name = []

    def output(work: Path) -> Path | None:
        found = [p for p in work.glob("captioner-tiny-*") if not p.name.endswith(".partial")] if work.exists() else []
        run_name[:] = run_name or [p.name for p in found]
        return work / run_name[0] if run_name else None

    _campaign("predictors.run", cmd, output, tmp_path, seed=1, kills=8)


def test_index_build(inputs, tmp_path):
    cmd = lambda out: python_m("index.build", "--prompts", inputs / "prompts.txt", "--out", out, "--shard-size", "8",
                               "--batch-size", "8", "--values-backend", "torch")
    _campaign("index.build", cmd, lambda w: w if (w / "manifest.json").exists() else None, tmp_path, seed=2,
              kills=8, warm=True)


def test_ensemble_tune_without_warm_start(inputs, tmp_path):
    cmd = lambda out: python_m("ensemble.tune", "--runs", inputs / "runs", "--truth", inputs / "truth_run", "--out", out,
                               "--trials", "60", "--folds", "0", "--no-warm-start", "--no-report", "--no-progress")
    _campaign("ensemble.tune", cmd, lambda w: w if (w / "best.json").exists() else None, tmp_path, seed=3,
              kills=6, skip=("optuna.db",))


TRAIN = ("--val-frac", "0.25", "--num-workers", "0", "--no-progress", "--device", "cpu", "--config", "tiny")


def _not_checked(work: Path) -> bool:
    """Trainers rewrite their checkpoint, metrics and model while training: no single file marks the end, so
    only the resumed end result is compared."""
    return False


def test_clip_regressor_train(inputs, tmp_path):
    cmd = lambda out: python_m("predictors.clip_regressor.train", "--images", inputs / "train_images", "--out", out,
                               "--epochs", "12", "--set", "hidden=64", *TRAIN)
    _campaign("clip_regressor.train", cmd, lambda w: w, tmp_path, seed=4, kills=4,
              published=_not_checked, warm=True)


def test_clipcap_train(inputs, tmp_path):
    cmd = lambda out: python_m("predictors.clipcap.train", "--images", inputs / "train_images", "--out", out,
                               "--epochs", "4", *TRAIN)
    _campaign("clipcap.train", cmd, lambda w: w, tmp_path, seed=5, kills=4,
              published=_not_checked, warm=True)
