"""Slow: every ``*-tiny`` predictor over all 400 drawbench JPEGs + the 7 Kaggle PNGs, then a cache hit."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from predictors.registry import get_predictor_config, list_predictors
from predictors.run import run_predictor

TINY = [n for n in list_predictors() if n.endswith("-tiny") and not get_predictor_config(n).get("requires")]


@pytest.fixture(scope="module")
def all_images(tmp_path_factory, drawbench, kaggle_sample):
    dst = tmp_path_factory.mktemp("all") / "images"
    dst.mkdir()
    for src in (drawbench / "images", kaggle_sample / "images"):
        for p in src.iterdir():
            shutil.copy(p, dst / p.name)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_tiny_predictor_on_all_real_images(name, all_images, tmp_path):
    n = sum(1 for _ in all_images.iterdir())
    assert n == 407
    t0 = time.perf_counter()
    run = run_predictor(name, all_images, tmp_path, progress=False)
    first = time.perf_counter() - t0
    assert run.embeddings.shape == (n, 384) and np.isfinite(run.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(run.embeddings, axis=1), 1.0, atol=1e-4)
    t0 = time.perf_counter()
    again = run_predictor(name, all_images, tmp_path, progress=False)
    hit = time.perf_counter() - t0
    assert again.meta.get("cache_hit") and again.path == run.path
    print(f"\n{name}: {n} images, first run {first:.1f} s (setup {run.meta.get('setup_s')} s), cache hit {hit:.2f} s")
