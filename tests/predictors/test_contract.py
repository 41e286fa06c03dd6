"""Contract tests over every registry entry named ``*-tiny`` (and ``external``): the same checks for all.

A run over drawn images (PNG and JPEG, :mod:`shapes`: no ../shared needed) has one unit-norm float32
384-d row per image id, in the image set's order (checked against one-image-at-a-time predictions), and
the second run is a cache hit: no model set up, nothing predicted, the run folder untouched. Entries
that declare ``"requires": [...]`` in their JSON get those inputs from ``RESOURCES`` (a missing
builder fails the test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from shapes import COLOURS, SHAPES

import predictors.run
from predictors.base import Predictor
from predictors.registry import create_predictor, get_predictor_config, list_predictors
from predictors.run import run_predictor
from promptblend.imagesets import open_image_set
from promptblend.runs import is_run
from promptblend.submission import write_submission
from promptblend.vectors import l2_normalise

CONTRACT_ENTRIES = [n for n in list_predictors() if n.endswith("-tiny") or n == "external"]


def _external_source(images: Path, tmp: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A submission CSV for the set's ids, written in reverse order (the run must re-align it)."""
    ids = open_image_set(images).ids
    emb = l2_normalise(np.random.default_rng(0).normal(size=(len(ids), 384)))
    write_submission(tmp / "outside.csv", ids[::-1], emb[::-1])
    return {"source": str(tmp / "outside.csv")}, dict(zip(ids, emb))


def _knn_index(images: Path, tmp: Path) -> tuple[dict, None]:
    """A 48-prompt bank of shape descriptions keyed by the tiny CLIP (what ``knn-tiny`` searches)."""
    from index.build import BuildConfig, build_bank

    src = tmp / "bank.txt"
    src.write_text("".join(f"a {c} {s} on a plain background\n" for c in COLOURS for s in SHAPES + ("star",)))
    build_bank(BuildConfig(prompts=[str(src)], keys="pb-tiny-clip", values_backend="torch"), tmp / "bank", progress=False)
    return {"index": str(tmp / "bank")}, None


def _text_map_bank(images: Path, tmp: Path) -> tuple[dict, None]:
    """The same bank for ``clip-text-map-tiny``, with the image set itself as the stated modality-gap set
    (so a one-image prediction is shifted by the same mean as the run)."""
    config, _ = _knn_index(images, tmp)
    return {"bank": config["index"], "gap_images": str(images)}, None


#: requirement name -> builder(image folder, temp folder) -> (config, expected rows by id or None)
RESOURCES: dict[str, Callable[[Path, Path], tuple[dict, dict[str, np.ndarray] | None]]] = {
    "source": _external_source,
    "index": _knn_index,
    "bank": _text_map_bank,
}


def _resources(name: str, images: Path, tmp: Path) -> tuple[dict, dict[str, np.ndarray] | None]:
    config: dict = {}
    expected = None
    for need in get_predictor_config(name).get("requires", []):
        assert need in RESOURCES, f"{name} requires '{need}': add a builder to RESOURCES"
        more, expected = RESOURCES[need](images, tmp)
        config.update(more)
    return config, expected


def _refuse(*args, **kwargs):
    raise AssertionError("a cache hit must not set up a model or predict")


def test_registry_has_the_seed_systems():
    import predictors.registry

    # the built-in entries (applications such as the demo may register more at run time)
    names = {p.stem for p in (Path(predictors.registry.__file__).parent / "configs").glob("*.json")}
    assert names <= set(list_predictors())
    assert {"clip-interrogator", "clip-interrogator-tiny", "captioner", "captioner-tiny", "external"} <= names
    # every model-backed entry has a tiny twin
    for n in names - {"external"}:
        assert n.endswith("-tiny") or f"{n}-tiny" in names, n


@pytest.mark.parametrize("name", CONTRACT_ENTRIES)
def test_contract(name, drawn_images, tmp_path, monkeypatch):
    config, expected = _resources(name, drawn_images, tmp_path)
    image_set = open_image_set(drawn_images)
    out = tmp_path / "runs"
    # batch 3 and shard 4: batches straddle shard boundaries
    run = run_predictor(name, drawn_images, out, config, batch_size=3, workers=1, shard_size=4, progress=False)

    emb = run.embeddings
    assert emb.shape == (len(image_set), 384) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert run.ids == image_set.ids and is_run(run.path)
    assert not list(out.glob("*.partial")), "the partial shards folder is removed once the run is complete"
    predictor = create_predictor(name, **config)
    if predictor.produces_text:
        assert run.prompts is not None and len(run.prompts) == len(run.ids)

    # order kept: each row is that image's own prediction
    if expected is not None:
        np.testing.assert_allclose(emb, np.stack([expected[i] for i in run.ids]), atol=1e-6)
    else:
        singles = {i: predictor.predict([image_set.load(k)])[0] for k, i in reversed(list(enumerate(image_set.ids)))}
        cos = np.einsum("ij,ij->i", emb, np.stack([singles[i] for i in run.ids]))
        assert (cos > 0.999).all(), f"batched rows differ from single-image predictions: cos {cos.round(4)}"
        assert np.ptp(emb, axis=0).max() > 1e-3, "every image got the same vector: order cannot be checked"

    # the second run is a cache hit: nothing is set up or predicted, the run folder is left as it was
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.path.rglob("*")) if p.is_file()}
    monkeypatch.setattr(Predictor, "ensure_setup", _refuse)
    monkeypatch.setattr(predictors.run, "BatchStream", _refuse)
    again = run_predictor(name, drawn_images, out, config, progress=False)
    assert again.meta.get("cache_hit") and again.path == run.path
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.path.rglob("*")) if p.is_file()} == files
    np.testing.assert_array_equal(again.embeddings, emb)


@pytest.mark.parametrize(
    "name, key",
    [("captioner-tiny", "model"), ("clip-interrogator-tiny", "caption_model"),
     ("clip-interrogator-tiny", "clip_pretrained"), ("knn-tiny", "clip_pretrained")],
)
def test_local_weights_are_keyed_by_content(name, key, tmp_path):
    """A local weights file or model folder named in the config enters the cache key by content."""
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    keys = []
    for content, target in ((b"one", weights), (b"two", weights), (b"two", weights.parent), (b"three", weights.parent)):
        weights.write_bytes(content)
        keys.append(create_predictor(name, **{key: str(target)}).cache_inputs())
    assert keys[0] != keys[1] and keys[2] != keys[3], keys
    weights.write_bytes(b"two")
    assert create_predictor(name, **{key: str(weights)}).cache_inputs() == keys[1]  # same bytes, same key
    assert key not in create_predictor(name).cache_inputs()  # hub names and tags are not paths


def test_caches_and_banks_are_not_hashed_whole(tmp_path):
    """The label cache is an output (its growth must not change the key); a bank is keyed by its manifest."""
    cache = tmp_path / "labels"
    cache.mkdir()
    before = create_predictor("clip-interrogator-tiny", label_cache=str(cache)).cache_inputs()
    (cache / "more.npy").write_bytes(b"x")
    assert create_predictor("clip-interrogator-tiny", label_cache=str(cache)).cache_inputs() == before
    (tmp_path / "manifest.json").write_text('{"build_hash": "a"}')
    first = create_predictor("knn-tiny", index=str(tmp_path)).cache_inputs()
    (tmp_path / "index.faiss").write_bytes(b"large")
    assert create_predictor("knn-tiny", index=str(tmp_path)).cache_inputs() == first
