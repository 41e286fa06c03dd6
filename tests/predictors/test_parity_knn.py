"""Parity with the reference: a ``knn`` run (CLIP image embedding -> FAISS search over the bank's keys ->
softmax(similarity / temperature)-weighted mean of the neighbours' values) equals the same computation done
by brute force in numpy: every key scored, the top k taken by sorting, the softmax and the mean written out.

At this size ``index.build`` makes an exact (flat) index; past 500k prompts it builds an approximate one,
whose recall ``index.build`` measures and reports instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from index.build import BuildConfig, build_bank
from predictors.run import run_predictor
from promptblend.bank import load_bank
from promptblend.clip import embed_images, load_clip
from promptblend.imagesets import open_image_set


@pytest.fixture(scope="module")
def bank(drawbench, tmp_path_factory):
    """120 DrawBench prompts keyed by the tiny CLIP."""
    tmp = tmp_path_factory.mktemp("knn-parity")
    src = tmp / "bank.csv"
    pd.read_csv(drawbench / "prompts.csv")[["prompt"]].drop_duplicates().head(120).to_csv(src, index=False)
    build_bank(BuildConfig(prompts=[str(src)], keys="pb-tiny-clip", values_backend="torch"), tmp / "bank", progress=False)
    return tmp / "bank"


def brute_force(queries: np.ndarray, keys: np.ndarray, values: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """Unit softmax-weighted means of the values of each query's ``k`` most similar keys (numpy only)."""
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T
    out = []
    for row in sims:
        top = np.argsort(-row, kind="stable")[:k]
        w = np.exp((row[top] - row[top].max()) / temperature)
        mean = (w / w.sum()) @ values[top].astype(np.float64)
        out.append(mean / np.linalg.norm(mean))
    return np.array(out)


@pytest.mark.parametrize("k, temperature", [(5, 0.05), (1, 0.05), (200, 1.0)])  # 200 > the bank: rows of -1
def test_faiss_path_equals_brute_force(bank, drawbench, copy_images, tmp_path, k, temperature):
    images = copy_images(drawbench / "images", 8)
    run = run_predictor("knn-tiny", images, tmp_path / "runs", {"index": str(bank), "k": k, "temperature": temperature},
                        workers=0, batch_size=3, device="cpu", progress=False)
    b = load_bank(bank)
    s = open_image_set(images)
    clip = load_clip("pb-tiny-clip", None, "cpu")
    queries = embed_images(clip, torch.stack([clip.preprocess(s.load(i)) for i in range(len(s))]))
    want = brute_force(queries, np.asarray(b.keys), np.asarray(b.values), k, temperature)
    np.testing.assert_allclose(run.embeddings, want, atol=2e-5)
    assert np.ptp(want, axis=0).max() > 1e-3, "every image got the same neighbours: the comparison is weak"
