"""clip-text-map: the ridge fit against the direct solution, the penalty chosen on held-out prompts, the map
cached beside the bank by bank + CLIP identity, the modality-gap shift, and the command line from a bank
built by ``index.build`` with no training images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from shapes import COLOURS, SHAPES, make_shapes

import predictors.clip_text_map as ctm
from index.build import BuildConfig, build_bank
from predictors.registry import create_predictor
from predictors.run import main as run_main
from promptblend.bank import load_bank
from promptblend.clip import load_clip
from promptblend.errors import ConfigError
from promptblend.imagesets import open_image_set
from promptblend.runs import load_run
from promptblend.vectors import l2_normalise


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("textmap")
    src = tmp / "bank.txt"
    src.write_text("".join(f"a {c} {s} on a plain background\n" for c in COLOURS for s in SHAPES + ("star",)))
    build_bank(BuildConfig(prompts=[str(src)], keys="pb-tiny-clip", values_backend="torch"), tmp / "bank", progress=False)
    return tmp / "bank"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("textmap-images") / "images", 6, size=64)


def _data(n: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = l2_normalise(rng.normal(size=(n, 12)))
    y = x @ rng.normal(size=(12, 384)) + rng.normal(size=384) + noise * rng.normal(size=(n, 384))
    return x, l2_normalise(y)


def test_ridge_fit_is_the_direct_solution_and_streams_in_chunks():
    x, y = _data(300, 0.5)
    m = ctm.fit_text_map(x, y, alphas=(1e-3,), held_out=0.1, seed=0, chunk=37)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc / len(x) + 1e-3 * np.eye(12), xc.T @ yc / len(x))
    np.testing.assert_allclose(m.weights[0], w, atol=1e-4)
    np.testing.assert_allclose(m.biases[0], y.mean(0) - x.mean(0) @ w, atol=1e-4)
    np.testing.assert_allclose(m.text_mean, x.mean(0), atol=1e-6)
    np.testing.assert_allclose(m.apply(x), l2_normalise(x @ w + y.mean(0) - x.mean(0) @ w), atol=1e-4)
    assert m.info["n_fit"] == 300 and m.info["n_held_out"] == 30


def test_penalty_is_chosen_on_held_out_prompts():
    alphas = (1e-6, 1.0)
    clean = ctm.fit_text_map(*_data(400, 0.0), alphas=alphas)
    noisy = ctm.fit_text_map(*_data(40, 30.0), alphas=alphas)  # 36 rows, 12 dims, pure noise: shrink
    assert clean.info["alpha"] == 1e-6 and noisy.info["alpha"] == 1.0
    assert clean.info["held_out_scores"][0] > 0.99
    assert len(noisy.info["held_out_scores"]) == 2 and clean.choose() == 0 and noisy.choose() == 1


def test_images_that_vary_where_text_does_not_get_a_stronger_penalty():
    """Text keys spread over 4 of 12 directions (barely over the rest); images spread over all 12. The
    text-best weak penalty would amplify the 8 image-only directions: the stronger one is chosen."""
    rng = np.random.default_rng(1)
    keys = np.concatenate([rng.normal(size=(400, 4)), 1e-3 * rng.normal(size=(400, 8))], 1)
    y = l2_normalise(keys[:, :4] @ rng.normal(size=(4, 384)) + 0.05 * rng.normal(size=(400, 384)))
    m = ctm.fit_text_map(l2_normalise(keys), y, alphas=(1e-6, 1e-1))
    assert m.choose() == 0  # best on held-out text
    like_text = l2_normalise(np.concatenate([rng.normal(size=(200, 4)), 1e-3 * rng.normal(size=(200, 8))], 1))
    images = l2_normalise(rng.normal(size=(50, 12)))
    assert m.choose(like_text) == 0 and m.choose(images) == 1


def test_map_is_saved_beside_the_bank_and_keyed_by_bank_and_clip(bank, tmp_path, monkeypatch, caplog):
    b = load_bank(bank)
    first = ctm.text_map_for(b, "clip-a")
    files = sorted(bank.glob("text-map-*.npz"))
    assert len(files) == 1 and first.info["bank"] == b.manifest["build_hash"] and first.info["clip"] == "clip-a"

    def refit(*a, **k):
        raise AssertionError("a saved map is loaded, not refitted")

    with monkeypatch.context() as m:
        m.setattr(ctm, "fit_text_map", refit)
        np.testing.assert_array_equal(ctm.text_map_for(b, "clip-a").weights, first.weights)
    ctm.text_map_for(b, "clip-b")  # another CLIP: another file
    assert len(list(bank.glob("text-map-*.npz"))) == 2
    # a truncated map is refitted with a warning, and replaced
    files[0].write_bytes(files[0].read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = ctm.text_map_for(b, "clip-a")
    assert "not a readable text map" in caplog.text
    np.testing.assert_allclose(again.weights, first.weights, atol=1e-6)
    assert ctm.TextMap.load(files[0]).info["key"] == first.info["key"]


def test_unwritable_bank_folder_keeps_the_map_in_the_cache(bank, tmp_path, monkeypatch):
    """(Simulated: the tests may run as root, who writes into read-only folders.)"""
    import shutil

    from promptblend.cache import cache_dir
    from promptblend.errors import OutputError

    ro = tmp_path / "ro"
    shutil.copytree(bank, ro, ignore=shutil.ignore_patterns("text-map-*"))
    save = ctm.TextMap.save

    def refuse_bank_folder(self, path):
        if Path(path).parent == ro:
            raise OutputError(f"cannot write {path}: Read-only file system")
        save(self, path)

    monkeypatch.setattr(ctm.TextMap, "save", refuse_bank_folder)
    made = ctm.text_map_for(load_bank(ro), "clip-ro")
    assert not list(ro.glob("text-map-*"))
    assert (cache_dir() / "text-maps" / f"text-map-{made.info['key']}.npz").is_file()


def test_prediction_shifts_across_the_gap(bank, images):
    image_set = open_image_set(images)
    pred = create_predictor("clip-text-map-tiny", bank=str(bank))
    with pytest.raises(ConfigError, match="no image mean"):
        pred.predict([image_set.load(0)])
    pred.prepare(image_set)
    got = pred.predict([image_set.load(i) for i in range(len(image_set))])
    clip = load_clip("pb-tiny-clip", None, "cpu")
    emb = np.stack([clip_embed(clip, image_set.load(i)) for i in range(len(image_set))])
    tmap = ctm.text_map_for(load_bank(bank), clip.identity)
    a = tmap.choose(emb)
    assert pred.alpha == a
    want = l2_normalise((emb - emb.mean(0) + tmap.text_mean) @ tmap.weights[a] + tmap.biases[a])
    np.testing.assert_allclose(got, want, atol=1e-4)
    # gap=none applies the map to the image embeddings as they are
    plain = create_predictor("clip-text-map-tiny", bank=str(bank), gap="none")
    plain.prepare(image_set)
    np.testing.assert_allclose(plain.predict([image_set.load(0)])[0],
                               l2_normalise(emb[:1] @ tmap.weights[a] + tmap.biases[a])[0], atol=1e-4)


def clip_embed(bundle, image):
    from promptblend.clip import embed_images

    return embed_images(bundle, bundle.preprocess(image)[None])[0]


def test_command_line_run_from_a_bank_and_no_training_images(bank, images, tmp_path, capsys):
    """The issue's command: ``python -m predictors.run clip-text-map --images DIR --out RUNS --config bank=BANK``
    (with the tiny CLIP the bank was keyed by)."""
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"clip_model": "pb-tiny-clip", "clip_pretrained": None}))
    argv = ["clip-text-map", "--images", str(images), "--out", str(tmp_path / "runs"), "--config", f"bank={bank}",
            str(tiny), "--workers", "0"]
    assert run_main(argv) == 0
    run = load_run(next(p for p in (tmp_path / "runs").iterdir() if p.is_dir()))
    assert run.embeddings.shape == (6, 384) and np.ptp(run.embeddings, axis=0).max() > 1e-3
    assert run.meta["config"]["bank"] == str(bank) and run.meta["config"]["_inputs"]["bank"]
    # a bank without CLIP keys is one named error
    plain = tmp_path / "plain"
    build_bank(BuildConfig(prompts=[str(bank / "prompts.txt")], values_backend="torch"), plain, progress=False)
    assert run_main(["clip-text-map-tiny", "--images", str(images), "--out", str(tmp_path / "r2"),
                     "--config", f"bank={plain}", "--workers", "0"]) == 2
    assert "error:" in capsys.readouterr().err
