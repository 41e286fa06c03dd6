"""clip-regressor: learns the shapes set better than the mean prompt; the predictor reloads the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shapes import make_shapes

from predictors.clip_regressor import train_regressor
from predictors.registry import create_predictor
from predictors.training import read_metrics, split_indices
from promptblend.errors import ConfigError
from promptblend.imagesets import open_image_set
from promptblend.metric import score
from promptblend.text import encode

FAST = {"num_workers": 0, "progress": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    images = make_shapes(tmp_path_factory.mktemp("shapes") / "images", 320, seed=0)
    out = train_regressor(images, images / "prompts.csv", tmp_path_factory.mktemp("reg") / "out", "tiny",
                          epochs=12, val_frac=0.25, **FAST)
    return images, out


def test_loss_falls_and_held_out_score_beats_mean_prompt(trained):
    _, out = trained
    rows = read_metrics(out)
    train_loss = [r["train_loss"] for r in rows]
    assert train_loss[-1] < 0.6 * train_loss[0]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    # the regressor beats always answering the mean training-prompt vector on held-out images
    assert rows[-1]["val_score"] > rows[-1]["baseline_score"] + 0.02, rows[-1]


def test_predictor_reproduces_held_out_score(trained):
    images, out = trained
    image_set = open_image_set(images)
    _, val_idx = split_indices(len(image_set), 0.25, seed=0)
    predictor = create_predictor("clip-regressor-tiny", checkpoint=str(out))
    emb = predictor.predict([image_set.load(i) for i in val_idx])
    assert emb.shape == (len(val_idx), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    truth = encode([image_set.prompt_list()[i] for i in val_idx])
    assert score(emb, truth) == pytest.approx(read_metrics(out)[-1]["val_score"], abs=1e-4)
    assert predictor.cache_inputs()["checkpoint"]  # the runner's cache key follows the weights


def test_random_init_and_checkpoint_rules(trained, tmp_path):
    images, out = trained
    image_set = open_image_set(images)
    random_head = create_predictor("clip-regressor-tiny")  # no checkpoint: random head, for contract tests
    emb = random_head.predict([image_set.load(0), image_set.load(1)])
    assert emb.shape == (2, 384) and np.isfinite(emb).all()
    with pytest.raises(ConfigError, match="needs checkpoint"):
        create_predictor("clip-regressor")  # the real entry has no random fallback
    with pytest.raises(ConfigError, match="trained on CLIP"):
        create_predictor("clip-regressor", checkpoint=str(out), clip_model="ViT-B-32")
    with pytest.raises(ConfigError, match="not clipcap"):
        create_predictor("clipcap-tiny", checkpoint=str(out))


def test_own_clip_weights_file_travels_with_the_checkpoint(trained, tmp_path):
    """The demo passes clip=(TINY_CLIP, its weights file) to the trainer and the predictor."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from promptblend.clip import TINY_CLIP, register_clip_configs
    from promptblend.errors import ModelNotFoundError

    images, _ = trained
    register_clip_configs()
    torch.manual_seed(5)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(TINY_CLIP).state_dict().items()}, str(weights))
    image_set = open_image_set(images)
    paths, prompts = image_set.paths[:40], image_set.prompt_list()[:40]  # file list + aligned prompt list
    out = train_regressor(paths, prompts, tmp_path / "out", "tiny", clip=(TINY_CLIP, str(weights)), epochs=2, **FAST)
    predictor = create_predictor("clip-regressor-tiny", checkpoint=str(out))
    assert predictor.clip == (TINY_CLIP, str(weights))
    emb = predictor.predict([image_set.load(0)])
    moved = weights.rename(tmp_path / "moved.safetensors")
    again = create_predictor("clip-regressor-tiny", checkpoint=str(out), clip_pretrained=str(moved))
    np.testing.assert_allclose(again.predict([image_set.load(0)]), emb, atol=1e-6)
    with pytest.raises(ModelNotFoundError):
        create_predictor("clip-regressor-tiny", checkpoint=str(out))  # the recorded file is gone
