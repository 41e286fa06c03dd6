"""The top solutions' training levers in clip-regressor: a head initialised as the CLIP-text -> MiniLM map,
a linear-probe phase before fine-tuning (LP-FT), a higher input resolution served as trained, test-time
views; and the trainer's presets and flags (``--finetune`` alone, the CLIP tag that follows the model, a
flag that contradicts a preset), and the loss row of an epoch that a resumption cut in two."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shapes import COLOURS, SHAPES, make_shapes

from index.build import BuildConfig, build_bank
from predictors.clip_regressor import PRESETS, train_regressor
from predictors.clip_regressor.model import RegressorHead, new_tower
from predictors.clip_regressor.train.__main__ import main as regressor_main
from predictors.clip_text_map import fit_text_map
from predictors.clip_views import parse_views, resize_tower, views_transform
from predictors.registry import create_predictor
from predictors.training import read_checkpoint_state, read_metrics, split_settings
from predictors.training.api import _parser, cli_settings
from predictors.training.optim import lr_factor
from promptblend.clip import TINY_CLIP
from promptblend.errors import ConfigError
from promptblend.imagesets import open_image_set
from promptblend.metric import score
from promptblend.text import encode
from promptblend.vectors import l2_normalise

FAST = {"num_workers": 0, "progress": False}
FT = {"batch_size": 8, "val_frac": 0.25, "hidden": 32, "dropout": 0.0, **FAST}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("levers") / "images", 24, seed=5)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("levers-bank")
    src = tmp / "bank.txt"
    src.write_text("".join(f"a {c} {s} on a plain background\n" for c in COLOURS for s in SHAPES + ("star",)))
    build_bank(BuildConfig(prompts=[str(src)], keys=TINY_CLIP, values_backend="torch"), tmp / "bank", progress=False)
    return tmp / "bank"


def test_text_map_head_starts_as_the_zero_shot_map():
    rng = np.random.default_rng(0)
    keys, feats = l2_normalise(rng.normal(size=(200, 16))), l2_normalise(rng.normal(size=(50, 16)) + 2.0)
    tmap = fit_text_map(keys, l2_normalise(rng.normal(size=(200, 384)) + keys @ rng.normal(size=(16, 384))))
    head = RegressorHead(16, hidden=8, linear=True)
    head.norm.fit(feats)
    for alpha in (0, tmap.choose(feats)):
        head.init_from_text_map(tmap, alpha)
        with torch.no_grad():
            got = head(torch.from_numpy(feats)).numpy()
        np.testing.assert_allclose(got, tmap.apply(feats, feats.mean(0), alpha), atol=1e-5)


def test_lr_is_constant_during_the_probe_then_warms_up_and_decays():
    assert [lr_factor(s, 14, 2, "cosine", lp=4) for s in (0, 3)] == [1.0, 1.0]
    assert [lr_factor(s, 14, 2, "cosine", lp=4) for s in (4, 5)] == pytest.approx([0.5, 1.0])
    assert lr_factor(14, 14, 2, "cosine", lp=4) == pytest.approx(0.0)
    assert lr_factor(9, 14, 2, "cosine", lp=4) == lr_factor(5, 10, 2, "cosine")


def test_resize_tower_interpolates_position_embeddings():
    visual, _ = new_tower(TINY_CLIP)
    before = visual.positional_embedding.detach().clone()  # 1 + 4 x 4 tokens at 64 px, patch 16
    resize_tower(visual, 96)
    assert visual.positional_embedding.shape == (1 + 6 * 6, before.shape[1])
    torch.testing.assert_close(visual.positional_embedding[0], before[0])  # the class token's is kept
    with torch.no_grad():
        assert visual(torch.zeros(2, 3, 96, 96)).shape == (2, visual.output_dim)
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        resize_tower(visual, 100)


def test_lp_ft_from_a_text_map_at_96_px_trains_and_serves_at_96_px(shapes, bank, tmp_path, capsys):
    """The issue's fine-tune: ``--head-init text-map --lp-steps 4 --image-size 96`` on pb-tiny-clip (64 px).
    The 4 probe steps leave the tower as it started; the end-to-end steps after them train it."""
    out = tmp_path / "lpft"
    argv = ["--images", str(shapes), "--out", str(out), "--config", "finetune-tiny", "--head-init", "text-map",
            "--bank", str(bank), "--lp-steps", "4", "--image-size", "96", "--batch-size", "8", "--val-frac", "0.25",
            "--set", "hidden=32", "--num-workers", "0", "--no-progress", "--val-every", "2"]
    assert regressor_main([*argv, "--max-steps", "4"]) == 0  # the probe alone (no --finetune: the preset sets it)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["finetune"] and config["train"]["head_init"] == "text-map"
    assert config["train"]["lp_steps"] == 4 and config["train"]["image_size"] == 96 and config["arch"]["linear"]
    assert config["head_init"]["kind"] == "text-map" and config["head_init"]["map"]
    state = read_checkpoint_state(out / "checkpoint.safetensors")
    assert (state["lp_steps"], state["head_init"], state["image_size"]) == (4, "text-map", 96)
    start, _ = new_tower(TINY_CLIP, None, 96)
    probed = load_file(str(out / "checkpoint.safetensors"))
    for name, value in start.state_dict().items():
        torch.testing.assert_close(probed[f"model.visual.{name}"], value)  # the tower did not move
    head = "model.head.linear.weight"
    assert head in probed

    assert regressor_main([*argv, "--max-steps", "6"]) == 0  # resumes into the end-to-end phase
    tuned = load_file(str(out / "checkpoint.safetensors"))
    moved = "model.visual.transformer.resblocks.1.mlp.c_fc.weight"
    assert not torch.equal(tuned[moved], probed[moved])
    assert not torch.equal(tuned[head], probed[head])
    # served at 96 px: the same validation score as the loop logged
    image_set = open_image_set(shapes)
    from predictors.training import split_indices

    _, val_idx = split_indices(len(image_set), 0.25, seed=0)
    predictor = create_predictor("clip-regressor-tiny", checkpoint=str(out))
    assert predictor.preprocess(image_set.load(0)).shape == (3, 96, 96)
    emb = predictor.predict([image_set.load(i) for i in val_idx])
    truth = encode([image_set.prompt_list()[i] for i in val_idx])
    assert score(emb, truth) == pytest.approx(read_metrics(out)[-1]["val_score"], abs=1e-5)


def test_fine_tune_preset_probes_a_text_map_head_when_a_bank_is_given(shapes, bank, tmp_path):
    with_bank = train_regressor(shapes, None, tmp_path / "a", "finetune-tiny", max_steps=10, bank=str(bank), **FT)
    config = json.loads((with_bank / "config.json").read_text())
    assert config["train"]["head_init"] == "text-map"
    assert read_checkpoint_state(with_bank / "checkpoint.safetensors")["lp_steps"] == 1  # 10% of 10 steps
    without = train_regressor(shapes, None, tmp_path / "b", "finetune-tiny", max_steps=2, **FT)
    assert json.loads((without / "config.json").read_text())["train"]["head_init"] == "random"
    assert read_checkpoint_state(without / "checkpoint.safetensors")["lp_steps"] == 0
    with pytest.raises(ConfigError, match="needs a prompt bank"):
        train_regressor(shapes, None, tmp_path / "c", "finetune-tiny", max_steps=2, head_init="text-map", **FT)
    with pytest.raises(ConfigError, match="lp_steps"):
        train_regressor(shapes, None, tmp_path / "d", "tiny", max_steps=2, lp_steps=2, **FAST)
    with pytest.raises(ConfigError, match="image_size needs fine-tuning"):
        train_regressor(shapes, None, tmp_path / "e", "tiny", max_steps=2, image_size=96, **FAST)


def test_resumed_row_averages_every_step_of_its_epoch(shapes, tmp_path):
    """Two resumptions inside the first epoch (a one-step time budget each): its loss row still averages
    all of the epoch's steps, as an uninterrupted run's does."""
    settings = {"epochs": 2, "val_frac": 0.25, "hidden": 32, "batch_size": 4, "save_every": 1, **FAST}
    ref = train_regressor(shapes, None, tmp_path / "ref", "tiny", **settings)
    out = tmp_path / "cut"
    for _ in range(2):
        train_regressor(shapes, None, out, "tiny", time_budget=1e-9, **settings)
    assert read_checkpoint_state(out / "checkpoint.safetensors")["step"] == 2 and not read_metrics(out)
    train_regressor(shapes, None, out, "tiny", **settings)
    got, want = read_metrics(out), read_metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [5, 10]
    np.testing.assert_allclose([r["train_loss"] for r in got], [r["train_loss"] for r in want], rtol=1e-5)


def _cli(argv: list[str]):
    a = _parser("clip-regressor", PRESETS, "train").parse_args(["--images", "x", "--out", "y", *argv])
    config, overrides = cli_settings(PRESETS, a)
    return split_settings(PRESETS, config, overrides)


def test_finetune_flag_alone_selects_the_fine_tune_preset_and_flags_win(caplog):
    loop, _, clip = _cli(["--finetune"])
    preset = PRESETS["finetune"]
    assert loop.finetune and (loop.lr, loop.ema, loop.schedule, loop.llrd) == (
        preset["lr"], preset["ema"], "cosine", preset["llrd"])
    assert loop.warmup == preset["warmup"] and loop.head_init == "auto"
    assert tuple(clip) == tuple(preset["clip"])
    loop, _, _ = _cli(["--config", "finetune-tiny"])  # the preset fine-tunes without the flag
    assert loop.finetune
    with caplog.at_level(logging.INFO, logger="predictors.training.config"):
        loop, _, _ = _cli(["--finetune", "--lr", "0.001", "--ema", "0"])
    assert (loop.lr, loop.ema) == (0.001, 0.0)
    assert "lr=0.001 overrides 'finetune' (lr=1e-05)" in caplog.text and "ema=0.0 overrides" in caplog.text
    loop, _, _ = _cli(["--config", "tiny", "--finetune"])  # a flag against the preset: the flag wins
    assert loop.finetune and loop.lr == PRESETS["tiny"]["lr"]


def test_clip_pretrained_follows_the_model():
    assert _cli(["--clip-model", TINY_CLIP])[2] == (TINY_CLIP, None)  # no tags: random init
    assert _cli(["--finetune", "--clip-model", "ViT-B-32"])[2] == ("ViT-B-32", "openai")
    assert _cli(["--clip-model", "ViT-B-32"])[2] == ("ViT-B-32", "openai")  # the preset's own model and tag
    assert _cli(["--clip-model", "ViT-B-32", "--clip-pretrained", "none"])[2] == ("ViT-B-32", None)
    assert _cli(["--clip-pretrained", "laion2b_s34b_b79k"])[2] == ("ViT-B-32", "laion2b_s34b_b79k")


def test_help_says_what_each_flag_takes(capsys):
    with pytest.raises(SystemExit):
        regressor_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a folder (id = file stem, prompts.csv beside), WebDataset shards or Parquet" in text
    for flag in ("--lr LR", "--epochs N", "--bank DIR", "--image-size PX", "--lp-steps N", "--seed N",
                 "--clip-pretrained TAG|FILE|none", "--config PRESET|JSON"):
        assert flag in text, flag


def test_tta_views_are_parsed_and_checked():
    views = parse_views([{}, {"resize": 80}, {"norm": "imagenet"}, {"norm": {"mean": [0, 0, 0], "std": [1, 1, 1]}}])
    assert [v.resize for v in views] == [None, 80, None, None] and views[3].mean == (0.0, 0.0, 0.0)
    assert not any(v.flip for v in views)
    assert parse_views(None) == parse_views([])
    for bad in ([{"size": 3}], [{"resize": 0}], [{"norm": "mine"}], {"resize": 80}, [{"norm": {"mean": [0]}}]):
        with pytest.raises(ConfigError, match="tta"):
            parse_views(bad)


def test_tta_averages_unit_predictions_of_each_view_and_is_its_own_run(shapes, bank, tmp_path):
    from predictors.run import run_predictor

    image_set = open_image_set(shapes)
    images = [image_set.load(i) for i in range(4)]
    views = [{}, {"resize": 80, "norm": "inception"}]
    config = {"index": str(bank)}
    one = create_predictor("knn-tiny", **config)
    both = create_predictor("knn-tiny", tta=views, **config)
    assert both.preprocess(images[0]).shape == (2, 3, 64, 64)
    zoomed = create_predictor("knn-tiny", **config)
    zoomed.transform = lambda: views_transform(one.transform(), parse_views(views[1:]))
    want = l2_normalise(
        np.stack([_knn_embedding(one, im) + _knn_embedding(zoomed, im) for im in images]))
    from predictors.knn import weighted_neighbours

    both.ensure_setup()
    sims, rows = both.bank.search(want, both.k)
    np.testing.assert_allclose(both.predict(images), weighted_neighbours(sims, rows, both.bank.values, both.temperature),
                               atol=1e-5)
    plain = run_predictor("knn-tiny", shapes, tmp_path / "runs", config, workers=0, progress=False)
    tta = run_predictor("knn-tiny", shapes, tmp_path / "runs", {**config, "tta": views}, workers=0, progress=False)
    assert plain.path != tta.path and not np.allclose(plain.embeddings, tta.embeddings)


def _knn_embedding(predictor, image) -> np.ndarray:
    from promptblend.clip import embed_images

    predictor.ensure_setup()
    return embed_images(predictor.clip, predictor.preprocess(image)[None])[0]
