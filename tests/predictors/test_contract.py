"""Contract tests over every registry entry named ``*-tiny`` (and ``external``): the same checks for all.

A run over real images has one unit-norm float32 384-d row per image id, in the image set's order
(checked against one-image-at-a-time predictions), and the second run is a cache hit. Entries that
declare ``"requires": [...]`` in their JSON get those inputs from ``RESOURCES`` or are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from predictors.registry import create_predictor, get_predictor_config, list_predictors
from predictors.run import run_predictor
from promptblend.images import open_image_set
from promptblend.runs import is_run
from promptblend.submission import write_submission
from promptblend.vectors import l2_normalise

CONTRACT_ENTRIES = [n for n in list_predictors() if n.endswith("-tiny") or n == "external"]


def _external_source(images: Path, tmp: Path, data: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A submission CSV for the set's ids, written in reverse order (the run must re-align it)."""
    ids = open_image_set(images).ids
    emb = l2_normalise(np.random.default_rng(0).normal(size=(len(ids), 384)))
    write_submission(tmp / "outside.csv", ids[::-1], emb[::-1])
    return {"source": str(tmp / "outside.csv")}, dict(zip(ids, emb))


def _knn_index(images: Path, tmp: Path, data: Path) -> tuple[dict, None]:
    """A 40-prompt bank keyed by the tiny CLIP (what ``knn-tiny`` searches)."""
    import pandas as pd

    from index.build import BuildConfig, build_bank

    src = tmp / "bank.csv"
    pd.read_csv(data / "drawbench-sd1" / "prompts.csv")[["prompt"]].drop_duplicates().head(40).to_csv(src, index=False)
    build_bank(BuildConfig(prompts=[str(src)], keys="pb-tiny-clip", values_backend="torch"), tmp / "bank", progress=False)
    return {"index": str(tmp / "bank")}, None


#: requirement name -> builder(image folder, temp folder, ../shared/data) -> (config, expected rows by id or None)
RESOURCES: dict[str, Callable[[Path, Path, Path], tuple[dict, dict[str, np.ndarray] | None]]] = {
    "source": _external_source,
    "index": _knn_index,
}


def _resources(name: str, images: Path, tmp: Path, data: Path) -> tuple[dict, dict[str, np.ndarray] | None]:
    config: dict = {}
    expected = None
    for need in get_predictor_config(name).get("requires", []):
        if need not in RESOURCES:
            pytest.skip(f"{name} requires '{need}', which this test cannot build")
        more, expected = RESOURCES[need](images, tmp, data)
        config.update(more)
    return config, expected


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
def test_contract(name, mixed_images, shared_data, tmp_path):
    config, expected = _resources(name, mixed_images, tmp_path, shared_data)
    image_set = open_image_set(mixed_images)
    out = tmp_path / "runs"
    # batch 3 and shard 4: batches straddle shard boundaries
    run = run_predictor(name, mixed_images, out, config, batch_size=3, workers=1, shard_size=4, progress=False)

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

    t0 = time.perf_counter()
    again = run_predictor(name, mixed_images, out, config, progress=False)
    assert again.meta.get("cache_hit") and again.path == run.path
    assert time.perf_counter() - t0 < 10
    np.testing.assert_array_equal(again.embeddings, emb)
