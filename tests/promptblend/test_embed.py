"""The scoring encoder: packaged all-MiniLM-L6-v2, float32, unit rows, input order kept."""

from __future__ import annotations

import numpy as np
import pytest

from promptblend.errors import ModelNotFoundError
from promptblend.text import encode, load_text_model, scoring_model_path


def test_encode_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["a red car", "hyper realistic photo of a crater, 8k, octane render", "x"]
    ours = encode(texts, backend="torch")
    ref = SentenceTransformer(str(scoring_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (3, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)
    # batching and length-sorting do not change the order or the values
    np.testing.assert_allclose(encode(texts[::-1], batch_size=1, backend="torch"), ours[::-1], atol=1e-5)
    np.testing.assert_allclose(encode(texts[0], backend="torch"), ours[0], atol=1e-6)


def test_empty_and_missing_model():
    assert encode([]).shape == (0, 384)
    with pytest.raises(ModelNotFoundError):
        load_text_model("/no/such/model/dir")
