"""Every cached artefact passes one check on load (promptblend.cache.load_entry): a damaged one is removed
with a warning and rebuilt, never trusted and never a crash."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from promptblend.cache import load_entry
from promptblend.runs import build_run, load_run
from promptblend.truth import truth_run


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_load_entry_absent_good_and_damaged(tmp_path, caplog):
    path = tmp_path / "x.npy"
    assert load_entry(path, np.load, "array") is None
    np.save(path, np.arange(10))
    np.testing.assert_array_equal(load_entry(path, np.load, "array"), np.arange(10))
    _truncate(path)
    with caplog.at_level(logging.WARNING):
        assert load_entry(path, np.load, "array") is None
    assert not path.exists() and os.listdir(tmp_path) == []
    assert f"cached array {path} fails its checks" in caplog.text


def test_an_unreadable_entry_is_not_removed(tmp_path):
    path = tmp_path / "x"
    path.write_text("x")

    def load(p):
        raise PermissionError(13, "Permission denied", str(p))

    with pytest.raises(PermissionError):
        load_entry(path, load, "entry")
    assert path.exists()


def _rows(calls):
    def compute(a, b):
        calls.append((a, b))
        return np.random.default_rng(a).normal(size=(b - a, 384)).astype(np.float32), None

    return compute


@pytest.mark.parametrize("damage", ["truncate embeddings", "junk meta", "drop ids"])
def test_a_damaged_cached_run_is_rebuilt(tmp_path, caplog, damage):
    ids = [f"i{k}" for k in range(10)]
    calls: list = []
    first = build_run(tmp_path, "p", {}, ids, "f" * 16, _rows(calls), shard_size=4, progress=False)
    folder = first.path
    if damage == "truncate embeddings":
        _truncate(folder / "embeddings.npy")
    elif damage == "junk meta":
        (folder / "meta.json").write_text("{not json")
    else:
        (folder / "ids.txt").write_text("i0\n")
    calls.clear()
    with caplog.at_level(logging.WARNING):
        again = build_run(tmp_path, "p", {}, ids, "f" * 16, _rows(calls), shard_size=4, progress=False)
    assert calls == [(0, 4), (4, 8), (8, 10)]
    assert "fails its checks" in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    np.testing.assert_array_equal(load_run(folder).embeddings, first.embeddings)


def test_a_truncated_truth_cache_is_rebuilt(tmp_path, caplog):
    prompts = {"a": "a red castle", "b": "a cat in the rain"}
    first = truth_run(prompts, cache=tmp_path)
    _truncate(first.path / "embeddings.npy")
    with caplog.at_level(logging.WARNING):
        again = truth_run(prompts, cache=tmp_path)
    assert "fails its checks" in caplog.text
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
