"""A run records its inference seconds per image (what ``ensemble.tune --time-budget`` projects from)."""

import time

import numpy as np

from promptblend.runs import build_run, load_run


def _slow(per_row: float):
    def compute(start, stop):
        time.sleep(per_row * (stop - start))
        return np.ones((stop - start, 384), np.float32), None

    return compute


def test_seconds_per_image_is_measured(tmp_path):
    ids = [f"i{k}" for k in range(12)]
    run = build_run(tmp_path, "p", {}, ids, "fp", _slow(0.01), shard_size=4, progress=False)
    assert 0.01 <= run.meta["seconds_per_image"] < 0.05
    assert load_run(run.path).meta["seconds_per_image"] == run.meta["seconds_per_image"]


def test_a_cached_run_keeps_its_measurement(tmp_path):
    ids = [f"i{k}" for k in range(4)]
    first = build_run(tmp_path, "p", {}, ids, "fp", _slow(0.005), shard_size=2, progress=False)
    again = build_run(tmp_path, "p", {}, ids, "fp", _slow(1.0), shard_size=2, progress=False)
    assert again.meta["seconds_per_image"] == first.meta["seconds_per_image"]
