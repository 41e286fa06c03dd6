"""A damaged bank shard on disk (a killed or broken earlier build) is recomputed with a warning, never trusted."""

from __future__ import annotations

import logging

import numpy as np

from index.embedding import TextModel, embed_in_shards

LINES = ["a red castle", "a cat in the rain", "oil painting of a ship", "neon city at night", "a misty forest"]


def test_a_truncated_or_wrong_shard_is_recomputed(tmp_path, caplog):
    model = TextModel("minilm", backend="torch")
    first = np.zeros((len(LINES), 384), np.float32)
    stats = embed_in_shards(model, lambda: iter(LINES), len(LINES), first, tmp_path / "shards", shard_size=2)
    assert stats == {"shards_reused": 0, "shards_computed": 3, "shards_on_driver": 3}
    shards = sorted((tmp_path / "shards").glob("*.npy"))
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])  # truncated
    np.save(shards[1], np.zeros((5, 384), np.float32))  # the wrong shape under a shard's address
    again = np.zeros_like(first)
    with caplog.at_level(logging.WARNING):
        stats = embed_in_shards(model, lambda: iter(LINES), len(LINES), again, tmp_path / "shards", shard_size=2)
    assert stats == {"shards_reused": 1, "shards_computed": 2, "shards_on_driver": 2}
    assert caplog.text.count("cached bank shard") == 2 and "fails its checks" in caplog.text
    np.testing.assert_allclose(again, first, atol=1e-6)
