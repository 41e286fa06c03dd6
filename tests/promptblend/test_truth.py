"""The truth goes through the fast exact encoder (ONNX export, length-bucketed) and matches torch."""

import gzip
import itertools

import numpy as np
import pytest

from promptblend.text import BACKEND_ENV, resolve_backend
from promptblend.truth import truth_run


@pytest.fixture(scope="module")
def prompts(shared_data):
    with gzip.open(shared_data / "prompt-bank" / "discord-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        texts = [line.strip() for line in itertools.islice(f, 300, 420)]
    texts += ["x", "word " * 300]  # one token; truncated at 256 tokens
    return {f"img{i:04d}": t for i, t in enumerate(texts)}


def test_auto_is_onnx_on_cpu_for_the_scoring_model(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr("promptblend.device.default_device", lambda: "cpu")
    assert resolve_backend("auto") == "onnx" and resolve_backend("auto", "all-MiniLM-L6-v2") == "onnx"
    assert resolve_backend("auto", "/some/other/model") == "torch"
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend("auto") == "torch" and resolve_backend("onnx") == "onnx"


@pytest.mark.slow
def test_truth_through_onnx_matches_torch_and_keys_the_cache(prompts, tmp_path, monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    fast = truth_run(prompts, cache=tmp_path, backend="onnx")
    ref = truth_run(prompts, cache=tmp_path, backend="torch")
    assert fast.meta["config"]["encoder"] == "onnx" and ref.meta["config"]["encoder"] == "torch"
    assert fast.meta["name"] != ref.meta["name"]  # the backends agree to ~1e-7, not bit for bit: separate cache entries
    assert not ref.meta.get("cache_hit")
    cos = np.einsum("ij,ij->i", fast.embeddings.astype(np.float64), ref.embeddings.astype(np.float64))
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(fast.embeddings, ref.embeddings, atol=2e-5)
    assert truth_run(prompts, cache=tmp_path, backend="onnx").meta["cache_hit"]
