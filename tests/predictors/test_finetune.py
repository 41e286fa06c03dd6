"""Fine-tuning clip-regressor end to end: LLRD, EMA served, named errors that keep the last good checkpoint,
kill-and-resume mid-epoch and torchrun (gloo) data parallelism matching one process."""

from __future__ import annotations

import json
import logging
import os
import shutil
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
from predictors.clip_regressor.model import (
    FinetunedRegressor,
    RegressorHead,
    RegressorTask,
    new_tower,
)
from predictors.registry import create_predictor
from predictors.training import (
    CheckpointError,
    TrainConfig,
    TrainingDivergedError,
    read_checkpoint_state,
    read_metrics,
    read_step_losses,
    split_indices,
)
from predictors.training.optim import lr_factor, make_optimizer
from promptblend.clip import TINY_CLIP
from promptblend.errors import ConfigError, TruthError
from promptblend.imagesets import open_image_set
from promptblend.metric import score
from promptblend.text import encode

#: Deterministic fine-tuning: no dropout, no augmentation, no workers.
FT = {"batch_size": 8, "val_frac": 0.25, "hidden": 32, "dropout": 0.0, "num_workers": 0, "progress": False}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes") / "images", 48, seed=4)


@pytest.fixture(scope="module")
def tuned(shapes, tmp_path_factory) -> Path:
    """6 steps with EMA 0.9, a checkpoint every 2 steps."""
    out = tmp_path_factory.mktemp("ft") / "out"
    return train_regressor(shapes, None, out, "finetune-tiny", max_steps=6, ema=0.9, val_every=3, save_every=2, **FT)


def test_llrd_gives_each_block_its_lr():
    visual, _ = new_tower(TINY_CLIP)
    model = FinetunedRegressor(visual, RegressorHead(visual.output_dim, 16))
    cfg = TrainConfig(finetune=True, lr=1e-3, head_lr=1e-2, llrd=0.5, weight_decay=0.1)
    opt = make_optimizer(RegressorTask({}).param_groups(model, cfg), cfg.lr, cfg.weight_decay)
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    n_blocks = len(visual.transformer.resblocks)  # 2: depths stem 0, blocks 1..2, top 3
    assert len(lr) == len(names)  # every parameter is in exactly one group
    for name, p in names.items():
        if name.startswith("head."):
            expected = 1e-2
        elif name.startswith("visual.transformer.resblocks."):
            block = int(name.split(".")[3])
            expected = 1e-3 * 0.5 ** (n_blocks - block)
        elif name.startswith(("visual.ln_post", "visual.proj")):
            expected = 1e-3
        else:  # stem: conv1, class/positional embeddings, ln_pre
            expected = 1e-3 * 0.5 ** (n_blocks + 1)
        assert lr[id(p)] == pytest.approx(expected), name
    assert decay[id(names["visual.transformer.resblocks.0.attn.in_proj_weight"])] == 0.1
    assert decay[id(names["visual.transformer.resblocks.0.ln_1.weight"])] == 0.0  # 1-d: no decay
    assert decay[id(names["visual.positional_embedding"])] == 0.0


def test_unfreeze_last_trains_only_the_top_blocks(shapes, tmp_path):
    out = train_regressor(shapes, None, tmp_path / "o", "finetune-tiny", max_steps=1, unfreeze_last=1, **FT)
    before = dict(new_tower(TINY_CLIP)[0].state_dict())
    after = {k[len("visual."):]: v for k, v in load_file(str(out / "model.safetensors")).items() if k.startswith("visual.")}
    assert torch.equal(after["transformer.resblocks.0.mlp.c_fc.weight"], before["transformer.resblocks.0.mlp.c_fc.weight"])
    assert not torch.equal(after["transformer.resblocks.1.mlp.c_fc.weight"], before["transformer.resblocks.1.mlp.c_fc.weight"])
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])


def test_schedule_warms_up_then_follows_a_cosine():
    assert [lr_factor(s, 100, 10, "cosine") for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(60, 100, 10, "constant") == 1.0


def test_ema_weights_are_the_ones_served(shapes, tuned):
    ckpt = load_file(str(tuned / "checkpoint.safetensors"))
    served = load_file(str(tuned / "model.safetensors"))
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    assert torch.equal(served[key], ckpt["ema." + key])
    assert not torch.equal(served[key], ckpt["model." + key])  # the raw weights differ from their average
    # the predictor reproduces the validation score logged with the EMA weights
    image_set = open_image_set(shapes)
    _, val_idx = split_indices(len(image_set), 0.25, seed=0)
    predictor = create_predictor("clip-regressor-tiny", checkpoint=str(tuned))
    assert predictor.finetuned
    emb = predictor.predict([image_set.load(i) for i in val_idx])
    truth = encode([image_set.prompt_list()[i] for i in val_idx])
    assert score(emb, truth) == pytest.approx(read_metrics(tuned)[-1]["val_score"], abs=1e-5)
    # TTA with a flipped view: the mean of an image's and its mirror's predictions, renormalised
    flip = create_predictor("clip-regressor-tiny", checkpoint=str(tuned), tta=[{}, {"flip": True}])
    images = [image_set.load(i) for i in val_idx[:3]]
    mirrored = predictor.predict([im.transpose(0) for im in images])  # PIL FLIP_LEFT_RIGHT
    both = emb[:3] + mirrored
    np.testing.assert_allclose(flip.predict(images), both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-5)
    # the cache key follows the weights' bytes
    assert predictor.cache_inputs()["checkpoint"] != create_predictor("clip-regressor-tiny").cache_inputs().get("checkpoint")


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_bad_inputs_raise_named_errors_and_keep_the_last_good_checkpoint(shapes, tuned, tmp_path, caplog):
    good = _bytes(tuned / "checkpoint.safetensors")
    # a set with no prompts
    bare = tmp_path / "bare"
    shutil.copytree(shapes, bare, ignore=shutil.ignore_patterns("*.csv"))
    with pytest.raises(TruthError, match="no truth prompts"):
        train_regressor(bare, None, tuned, "finetune-tiny", max_steps=8, ema=0.9, val_every=3, save_every=2, **FT)
    assert _bytes(tuned / "checkpoint.safetensors") == good
    # a checkpoint (and served weights) of another architecture
    other = train_regressor(shapes, None, tmp_path / "other", "finetune-tiny", max_steps=1, **{**FT, "hidden": 16})
    foreign = tmp_path / "foreign"
    shutil.copytree(tuned, foreign)
    shutil.copy(other / "checkpoint.safetensors", foreign / "checkpoint.safetensors")
    shutil.copy(other / "model.safetensors", foreign / "model.safetensors")
    with pytest.raises(CheckpointError, match="another architecture"):
        train_regressor(shapes, None, foreign, "finetune-tiny", max_steps=8, ema=0.9, val_every=3, save_every=2, **FT)
    assert _bytes(foreign / "checkpoint.safetensors") == _bytes(other / "checkpoint.safetensors")
    with pytest.raises(CheckpointError, match="another architecture"):
        create_predictor("clip-regressor-tiny", checkpoint=str(foreign)).predict([open_image_set(shapes).load(0)])
    # a truncated checkpoint fails its checks: removed with a warning, and training starts again from step 0
    cut = tmp_path / "cut"
    shutil.copytree(tuned, cut)
    (cut / "checkpoint.safetensors").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="promptblend.cache"):
        train_regressor(shapes, None, cut, "finetune-tiny", max_steps=8, ema=0.9, val_every=3, save_every=2, **FT)
    assert "fails its checks" in caplog.text and "rebuilding" in caplog.text
    from safetensors import safe_open

    with safe_open(str(cut / "checkpoint.safetensors"), "pt") as f:
        assert f.keys()  # a whole checkpoint again


def test_nan_loss_is_named_and_keeps_the_last_good_checkpoint(shapes, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match="step 2"):  # step 1 blows the weights up, step 2's loss is NaN
        train_regressor(shapes, None, out, "tiny", epochs=3, lr=1e30, save_every=1, batch_size=8, val_frac=0.25,
                        num_workers=0, progress=False)
    state = read_checkpoint_state(out / "checkpoint.safetensors")
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoint.safetensors")).values()
               if t.dtype.is_floating_point)
    assert len(read_step_losses(out)) == 1 and np.isfinite(read_step_losses(out)).all()


def _cli(images: Path, out: Path, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    return ["--images", str(images), "--out", str(out), "--config", "finetune-tiny", "--max-steps", str(steps),
            "--batch-size", "8", "--val-frac", "0.25", "--set", "hidden=32", "--set", "dropout=0.0",
            "--num-workers", "0", "--no-progress", "--ema", "0.9", *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_and_resume_matches_an_uninterrupted_run(shapes, tmp_path):
    steps = 14  # 36 training rows, batch 8: 5 steps per epoch, the kill lands inside an epoch
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "predictors.clip_regressor.train", *_cli(shapes, ref, steps, ("--val-every", "7"))],
                   env=ENV, check=True, capture_output=True)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "predictors.clip_regressor.train",
           *_cli(shapes, out, steps, ("--val-every", "7", "--save-every", "1"))]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _step(out) >= 8:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = _step(out)
    assert 8 <= killed_at < steps and killed_at % 5  # mid-epoch
    subprocess.run(cmd, env=ENV, check=True, capture_output=True)  # the same command resumes
    np.testing.assert_allclose(read_step_losses(out), read_step_losses(ref), rtol=1e-5)
    assert len(read_step_losses(out)) == steps
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)


def _step(out: Path) -> int:
    try:
        return int(read_checkpoint_state(out / "checkpoint.safetensors")["step"])
    except (OSError, CheckpointError):  # not written yet, or caught mid-rename
        return 0


@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_loss_curve(shapes, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--val-every", "20", "--ema", "0")
    subprocess.run([sys.executable, "-m", "predictors.clip_regressor.train", *_cli(shapes, one, 20, args)],
                   env=ENV, check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "predictors.clip_regressor.train"]
    done = subprocess.run([*torchrun, *_cli(shapes, two, 20, args)], env=ENV, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ref, ddp = read_step_losses(one), read_step_losses(two)
    assert len(ref) == len(ddp) == 20
    np.testing.assert_allclose(ddp, ref, rtol=1e-5)
    assert json.loads((two / "config.json").read_text())["data"] == json.loads((one / "config.json").read_text())["data"]


def _shards(images: Path, out: Path, per_shard: int) -> Path:
    """The folder ``images`` as WebDataset shards of ``per_shard`` samples (key = id, .txt = prompt)."""
    from promptblend.imagesets.shards import shard_name, write_shard

    image_set = open_image_set(images)
    out.mkdir()
    prompts = image_set.prompt_list()
    for s, start in enumerate(range(0, len(image_set), per_shard)):
        rows = range(start, min(start + per_shard, len(image_set)))
        write_shard(out / shard_name("train", s), [
            {"__key__": image_set.ids[i], "png": image_set.paths[i].read_bytes(), "txt": prompts[i]} for i in rows
        ])
    return out


def test_fine_tuning_streams_shards_and_resumes_at_the_same_step(shapes, tmp_path):
    train = _shards(shapes, tmp_path / "shards", 10)  # 48 samples: shards of 10, 10, 10, 10, 8
    val = make_shapes(tmp_path / "val", 8, seed=11)
    settings = {**FT, "val_frac": 0.0, "val_images": val, "max_steps": 8, "val_every": 4}
    ref = train_regressor(train, None, tmp_path / "ref", "finetune-tiny", **settings)
    assert json.loads((ref / "config.json").read_text())["data"] == {"n_pairs": 56, "n_train": 48, "n_val": 8, "one_image_per_prompt": False}
    losses = read_step_losses(ref)
    assert len(losses) == 8 and np.isfinite(losses).all() and losses[-1] < losses[0]
    # two decoding workers hand the batches back in the same order
    two = train_regressor(train, None, tmp_path / "two", "finetune-tiny", **{**settings, "num_workers": 2})
    np.testing.assert_allclose(read_step_losses(two), losses, rtol=1e-6)
    # stopped by the time budget mid-epoch (6 steps per epoch), then resumed: the same trajectory
    cut = train_regressor(train, None, tmp_path / "cut", "finetune-tiny", **settings, time_budget=1e-9)
    assert read_checkpoint_state(cut / "checkpoint.safetensors")["step"] == 1
    train_regressor(train, None, cut, "finetune-tiny", **settings)
    np.testing.assert_allclose(read_step_losses(cut), losses, rtol=1e-5)
    with pytest.raises(ConfigError, match="give a --val set"):  # streamed shards hold training rows only
        train_regressor(train, None, tmp_path / "noval", "finetune-tiny", **{**settings, "val_images": None})
    # a shard set serves as --val too (decoded in the same batch dataset): the same validation rows
    val_shards = _shards(val, tmp_path / "val-shards", 3)
    shard_val = train_regressor(train, None, tmp_path / "shard-val", "finetune-tiny", **{**settings, "val_images": val_shards})
    assert [r["val_score"] for r in read_metrics(shard_val)] == pytest.approx([r["val_score"] for r in read_metrics(ref)], rel=1e-5)


def test_the_frozen_head_trains_from_shards_as_from_the_folder(shapes, tmp_path):
    train = _shards(shapes, tmp_path / "shards", 10)
    val = make_shapes(tmp_path / "val", 8, seed=11)
    head = {"val_images": val, "epochs": 2, "num_workers": 0, "progress": False}
    from_folder = train_regressor(shapes, None, tmp_path / "folder", "tiny", **head)
    from_shards = train_regressor(train, None, tmp_path / "from-shards", "tiny", **head)
    assert len(read_step_losses(from_folder)) >= 2
    np.testing.assert_allclose(read_step_losses(from_shards), read_step_losses(from_folder), rtol=1e-6)
    val_shards = _shards(val, tmp_path / "val-shards", 4)  # the frozen head also validates on shards
    both = train_regressor(train, None, tmp_path / "both", "tiny", **{**head, "val_images": val_shards})
    np.testing.assert_allclose(read_step_losses(both), read_step_losses(from_folder), rtol=1e-6)


def test_shard_streams_give_each_rank_only_its_shards():
    from predictors.training import BatchPlan

    groups = (10, 10, 10, 10, 8)
    starts = np.cumsum((0, *groups))
    one = BatchPlan(48, 8, seed=3, groups=groups, parts=2)
    assert one.steps_per_epoch == 18 // 4  # a deal can give a stream just 10 + 8 rows; 4 rows per stream a batch
    for step in range(3 * one.steps_per_epoch):
        epoch = step // one.steps_per_epoch
        keys = one.global_keys(step)
        for rank in range(2):
            part = BatchPlan(48, 8, seed=3, world=2, rank=rank, groups=groups, parts=2)
            mine = np.concatenate(part.micro_batches(step))
            assert (mine == np.array_split(keys, 2)[rank]).all()  # the ranks' shares make up the global batch
            shards = set(np.searchsorted(starts, mine % 48, side="right") - 1)
            assert shards <= set(one.shard_order(epoch)[rank::2].tolist()), (step, rank)
    assert len(set(np.concatenate([one.global_keys(s) for s in range(one.steps_per_epoch)]))) == 32  # no repeats


@pytest.mark.slow
def test_two_gloo_processes_on_shard_streams_follow_the_one_process_curve(shapes, tmp_path):
    train = _shards(shapes, tmp_path / "shards", 6)  # 8 shards
    val = make_shapes(tmp_path / "val", 8, seed=11)
    args = ["--images", str(train), "--val", str(val), "--config", "finetune-tiny", "--max-steps", "10",
            "--batch-size", "8", "--set", "hidden=32", "--set", "dropout=0.0", "--num-workers", "0", "--no-progress",
            "--ema", "0", "--shard-parts", "2", "--val-every", "10"]
    subprocess.run([sys.executable, "-m", "predictors.clip_regressor.train", *args, "--out", str(tmp_path / "one")],
                   env=ENV, check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "predictors.clip_regressor.train", *args, "--out", str(tmp_path / "two")],
                          env=ENV, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    np.testing.assert_allclose(read_step_losses(tmp_path / "two"), read_step_losses(tmp_path / "one"), rtol=1e-5)
