"""knn predictor: real FAISS bank with tiny-CLIP keys, real drawbench images, a normal run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from index.build import BuildConfig, build_bank
from predictors.knn import KnnPredictor, weighted_neighbours
from predictors.registry import create_predictor, get_predictor_config
from promptblend.errors import ConfigError, KeyModelMismatchError
from promptblend.imagesets import open_image_set
from promptblend.runs import build_run, load_run


@pytest.fixture(scope="module")
def tiny_bank(drawbench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knn")
    src = tmp / "bank.csv"
    pd.read_csv(drawbench / "prompts.csv")[["prompt"]].drop_duplicates().head(80).to_csv(src, index=False)
    out = tmp / "bank"
    build_bank(BuildConfig(prompts=[str(src)], keys="pb-tiny-clip", values_backend="torch"), out, progress=False)
    return out


def test_registry_entries():
    for name, model in (("knn", "ViT-H-14"), ("knn-tiny", "pb-tiny-clip")):
        cfg = get_predictor_config(name)
        assert cfg["params"]["clip_model"] == model and {"index", "k", "temperature"} <= set(cfg["params"])


def test_knn_run_on_drawbench(tiny_bank, drawbench, copy_images, tmp_path):
    images = open_image_set(copy_images(drawbench / "images", 6))
    config = {"index": str(tiny_bank), "k": 5, "temperature": 0.1}
    predictor = create_predictor("knn-tiny", **config)

    def compute(start, stop):
        batch = predictor.collate([predictor.preprocess(images.load(i)) for i in range(start, stop)])
        return predictor.predict_batch(batch).embeddings, None

    run = build_run(tmp_path / "runs", "knn-tiny", config, images.ids, images.fingerprint(), compute, shard_size=4,
                    progress=False)
    assert run.ids == images.ids and run.embeddings.shape == (6, 384) and run.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(run.embeddings, axis=1), 1, atol=1e-5)
    assert load_run(run.path).ids == images.ids
    # row i is image i's own prediction (alignment across shards)
    for i in (0, 5):
        np.testing.assert_allclose(run.embeddings[i], predictor.predict([images.load(i)])[0], atol=1e-5)
    # and it is the softmax-weighted mean of that image's bank neighbours
    from promptblend.clip import embed_images

    emb = embed_images(predictor.clip, predictor.collate([predictor.preprocess(images.load(0))]))
    sims, rows = predictor.bank.search(emb, 5)
    w = np.exp((sims[0] - sims[0].max()) / 0.1)
    expected = (w[:, None] * predictor.bank.values[rows[0]]).sum(0)
    np.testing.assert_allclose(run.embeddings[0], expected / np.linalg.norm(expected), atol=1e-5)


def test_weighted_neighbours():
    values = np.eye(4, 384, dtype=np.float32)
    sims = np.array([[0.9, 0.5, 0.1], [0.3, 0.3, 0.0]], np.float32)
    rows = np.array([[2, 0, 1], [3, 1, -1]])
    cold = weighted_neighbours(sims, rows, values, temperature=1e-4)
    np.testing.assert_allclose(cold[0], values[2], atol=1e-6)  # a cold softmax picks the nearest
    np.testing.assert_allclose(cold[1], (values[3] + values[1]) / np.sqrt(2), atol=1e-6)  # -1 ignored
    hot = weighted_neighbours(sims, rows, values, temperature=1e4)
    np.testing.assert_allclose(hot[0], values[[2, 0, 1]].sum(0) / np.sqrt(3), atol=1e-3)


def test_key_model_mismatch_and_missing_index(tiny_bank):
    with pytest.raises(KeyModelMismatchError, match="pb-tiny-clip"):
        create_predictor("knn", index=str(tiny_bank)).ensure_setup()
    with pytest.raises(ConfigError, match="index="):
        create_predictor("knn-tiny").ensure_setup()
    with pytest.raises(ConfigError):
        KnnPredictor(k=0)
    with pytest.raises(ConfigError):
        KnnPredictor(temperature=0)


def test_preprocess_matches_the_loaded_clip(drawbench):
    from promptblend.clip import load_clip

    image = open_image_set(drawbench / "images").load(0)
    p = create_predictor("knn-tiny")
    np.testing.assert_allclose(p.preprocess(image).numpy(), load_clip("pb-tiny-clip").preprocess(image).numpy())


def test_image_query_on_a_clip_keyed_bank(tiny_bank, drawbench, capsys):
    from index.query import main as query_main
    from index.query import query_bank

    image = sorted((drawbench / "images").iterdir())[0]
    hits = query_bank(tiny_bank, str(image), k=4)
    assert len(hits) == 4 and all(-1 <= s <= 1 for s, _, _ in hits)
    assert [s for s, _, _ in hits] == sorted((s for s, _, _ in hits), reverse=True)
    assert query_main([str(tiny_bank), str(image), "-k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_rebuilt_bank_is_a_new_cache_key(tmp_path):
    from predictors.registry import create_predictor

    (tmp_path / "manifest.json").write_text('{"build_hash": "a"}')
    first = create_predictor("knn-tiny", index=str(tmp_path)).cache_inputs()
    (tmp_path / "manifest.json").write_text('{"build_hash": "b"}')
    second = create_predictor("knn-tiny", index=str(tmp_path)).cache_inputs()
    assert first["bank"] != second["bank"]
