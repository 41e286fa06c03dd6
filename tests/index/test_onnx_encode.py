"""The ONNX backend of ``encode`` gives sentence-transformers' vectors (export is slow: marked slow)."""

import gzip
import itertools

import numpy as np
import pytest

from promptblend.errors import EmbeddingError
from promptblend.text import encode


@pytest.mark.slow
def test_onnx_matches_sentence_transformers(shared_data):
    with gzip.open(shared_data / "prompt-bank" / "discord-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        texts = [line.strip() for line in itertools.islice(f, 200)]
    texts += ["", "x", "word " * 400]  # empty, one token, truncated at 256 tokens
    ref = encode(texts)
    got = encode(texts, backend="onnx", batch_size=16)
    cos = (ref * got).sum(1)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert cos.min() > 0.9999
    assert encode("a cat", backend="onnx").shape == (384,)


def test_unknown_backend():
    with pytest.raises(EmbeddingError, match="unknown encode backend"):
        encode(["a"], backend="tensorrt")
