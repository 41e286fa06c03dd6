"""Fixtures of the leaderboard tests: a workspace of runs, a tuned blend and an outside submission."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lb_synthetic import entry_cosines, truth_run, with_cosines

from promptblend.runs import Run, save_run
from promptblend.submission import write_submission

N = 300


def _cosines(seed: int, mean: float) -> np.ndarray:
    return entry_cosines(N, seed, mean)


@pytest.fixture
def workspace(tmp_path):
    truth = truth_run(N)
    save_run(tmp_path / "truth", truth)
    runs = tmp_path / "runs"
    t64 = truth.embeddings.astype(np.float64)
    for i, mean in enumerate([0.62, 0.57, 0.5]):
        emb = with_cosines(t64, _cosines(i, mean), np.random.default_rng(10 + i))
        save_run(runs / f"model{i}", Run(truth.ids, emb, {"name": f"model{i}", "predictor": f"p{i}", "config": {"i": i}, "wall_time_s": 1.5}))
    blend = runs / "blend"
    write_submission(blend / "submission.csv", truth.ids, with_cosines(t64, _cosines(7, 0.66), np.random.default_rng(7)))
    (blend / "best.json").write_text(json.dumps({"weights": {"model0": 0.6, "model1": 0.4}, "in_sample": 0.66, "out_of_fold": 0.635}))
    outside = tmp_path / "outside.csv"
    write_submission(outside, truth.ids, with_cosines(t64, _cosines(8, 0.53), np.random.default_rng(8)))
    return tmp_path, truth, runs, outside
