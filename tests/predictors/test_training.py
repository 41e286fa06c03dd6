"""The shared training loop (frozen-feature head): checkpoints, kill-and-resume, time budget, metrics, named errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shapes import make_shapes

from predictors.clip_regressor import train_regressor
from predictors.clip_regressor.train.__main__ import main as regressor_main
from predictors.registry import create_predictor
from predictors.training import (
    load_checkpoint,
    read_checkpoint_state,
    read_metrics,
    save_checkpoint,
)
from promptblend.errors import (
    ConfigError,
    ImageSetError,
    ModelNotFoundError,
    TruthError,
)

FAST = {"num_workers": 0, "progress": False}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes") / "images", 96, seed=3)


def test_checkpoint_restores_model_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied weights are stored once and restored tied
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", {"model": model}, opt, {"epoch": 3, "step": 7})
    expected_next = torch.rand(5)

    torch.manual_seed(123)
    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    other[1].weight = other[0].weight
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    assert load_checkpoint(tmp_path / "c.safetensors", {"model": other}, other_opt) == {"epoch": 3, "step": 7}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), other_opt.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])
    assert torch.equal(torch.rand(5), expected_next)  # the RNG continues where the checkpoint left it


def test_training_folder_contents_and_cli(shapes, tmp_path, capsys):
    out = tmp_path / "reg"
    rc = regressor_main(
        ["--images", str(shapes), "--out", str(out), "--config", "tiny", "--epochs", "2", "--val-frac", "0.25",
         "--num-workers", "0", "--no-progress", "--set", "hidden=64"]
    )
    assert rc == 0
    assert "validation loss" in capsys.readouterr().out
    for name in ("config.json", "checkpoint.safetensors", "model.safetensors", "metrics.csv", "metrics.json",
                 "training_curves.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "clip-regressor" and config["arch"]["hidden"] == 64
    assert config["data"] == {"n_pairs": 96, "n_train": 72, "n_val": 24, "one_image_per_prompt": False}
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite([r["train_loss"], r["val_loss"], r["val_score"], r["baseline_score"]]).all() for r in rows)
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("step,epoch,train_loss,val_loss,val_score")
    assert not list(out.glob(".*tmp*"))  # no temp files left by the atomic writes
    # running again with more epochs continues from the checkpoint; other settings are refused
    train_regressor(shapes, None, out, "tiny", epochs=3, val_frac=0.25, hidden=64, **FAST)
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]
    with pytest.raises(ConfigError, match="different training"):
        train_regressor(shapes, None, out, "tiny", epochs=4, val_frac=0.25, hidden=64, lr=0.5, **FAST)


def test_kill_and_resume_matches_uninterrupted(shapes, tmp_path):
    settings = {"epochs": 30, "val_frac": 0.25, "hidden": 64}
    reference = train_regressor(shapes, None, tmp_path / "ref", "tiny", **settings, **FAST)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "predictors.clip_regressor.train", "--images", str(shapes), "--out", str(out),
           "--config", "tiny", "--epochs", "30", "--val-frac", "0.25", "--set", "hidden=64", "--num-workers", "0",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(read_metrics_safe(out)) >= 3:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = _epoch(out)
    assert 2 <= killed_at < 30

    train_regressor(shapes, None, out, "tiny", **settings, **FAST)  # the same call resumes
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == list(range(1, 31))
    ref_rows = read_metrics(reference)
    np.testing.assert_allclose([r["train_loss"] for r in rows], [r["train_loss"] for r in ref_rows], rtol=1e-4)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def read_metrics_safe(out: Path) -> list:
    try:
        return read_metrics(out)
    except (OSError, ValueError):
        return []


def _epoch(out: Path) -> int:
    return int(read_checkpoint_state(out / "checkpoint.safetensors")["epoch"])


def test_bad_inputs_raise_named_errors(shapes, tmp_path):
    partial = tmp_path / "partial.csv"
    partial.write_text("imgId,prompt\nshape0000,a red circle on a blue background\n")
    with pytest.raises(TruthError, match="have no prompt"):
        train_regressor(shapes, partial, tmp_path / "o1", "tiny", epochs=1, **FAST)
    with pytest.raises(ImageSetError):
        train_regressor(tmp_path / "nope", None, tmp_path / "o2", "tiny", epochs=1, **FAST)
    with pytest.raises(ConfigError, match="unknown training setting"):
        train_regressor(shapes, None, tmp_path / "o3", "tiny", epochs=1, hiden=3, **FAST)
    with pytest.raises(ConfigError, match="val_frac"):
        train_regressor(shapes, None, tmp_path / "o4", "tiny", epochs=1, val_frac=1.5, **FAST)
    with pytest.raises(ModelNotFoundError):
        create_predictor("clip-regressor-tiny", checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError):
        train_regressor(shapes, None, tmp_path / "o5", "tiny", epochs=1, clip=("pb-tiny-clip", str(tmp_path / "w.safetensors")), **FAST)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o5" / "model.safetensors").exists()
    # the CLI turns them into one line and exit status 2
    assert regressor_main(["--images", str(shapes), "--prompts", str(partial), "--out", str(tmp_path / "o6"),
                           "--config", "tiny", "--no-progress"]) == 2


def test_time_budget_stops_with_a_checkpoint_and_the_run_continues(shapes, tmp_path):
    out = train_regressor(shapes, None, tmp_path / "b", "tiny", epochs=2, val_frac=0.25, hidden=32,
                          time_budget=1e-9, **FAST)
    assert read_checkpoint_state(out / "checkpoint.safetensors")["step"] == 1  # one step, then the budget ran out
    assert [r["step"] for r in read_metrics(out)] == []  # stopped before the first validation
    train_regressor(shapes, None, out, "tiny", epochs=2, val_frac=0.25, hidden=32, **FAST)  # no budget: finishes
    assert [r["step"] for r in read_metrics(out)] == [3, 6]


def test_separate_validation_set_and_finetune_only_where_supported(shapes, tmp_path):
    from predictors.clipcap import train_clipcap

    val = make_shapes(tmp_path / "val", 16, seed=9)
    out = train_regressor(shapes, None, tmp_path / "v", "tiny", val_images=val, epochs=1, hidden=32, **FAST)
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == {"n_pairs": 112, "n_train": 96, "n_val": 16, "one_image_per_prompt": False}  # every --images row trains
    assert np.isfinite(read_metrics(out)[-1]["val_score"])
    with pytest.raises(ConfigError, match="cannot fine-tune"):
        train_clipcap(shapes, None, tmp_path / "cc", "tiny", finetune=True, epochs=1, **FAST)
