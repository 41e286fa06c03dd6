"""Entries from runs folders, tuned blends and submissions; scoring and named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lb_synthetic import truth_run, with_cosines

from experiments.entries import (
    entry_from_arrays,
    find_entries,
    load_entries,
    score_entries,
    tuning_summary,
)
from promptblend.errors import ConfigError, ImageSetError, RunError, TruthError
from promptblend.runs import Run, save_run
from promptblend.submission import write_submission


def _run(truth: Run, cos: float, name: str, seed: int, **meta) -> Run:
    rng = np.random.default_rng(seed)
    emb = with_cosines(truth.embeddings.astype(np.float64), np.full(len(truth), cos), rng)
    return Run(list(truth.ids), emb, {"name": name, "predictor": "fake", "config": {"c": cos}, **meta})


@pytest.fixture
def folder(tmp_path):
    truth = truth_run(50)
    runs = tmp_path / "runs"
    save_run(runs / "a", _run(truth, 0.6, "a", 1, fingerprint="fp1"))
    save_run(runs / "b", _run(truth, 0.5, "b", 2, fingerprint="fp1"))
    blend = runs / "tuned"
    rng = np.random.default_rng(3)
    write_submission(blend / "submission.csv", truth.ids, with_cosines(truth.embeddings.astype(np.float64), np.full(50, 0.7), rng))
    best = {"weights": {"a": 0.7, "b": 0.3}, "in_sample": 0.72, "out_of_fold": 0.69, "fold_scores": [0.68, 0.7], "gradient_gap": 2e-6}
    (blend / "best.json").write_text(json.dumps(best))
    (runs / "notes").mkdir()
    (runs / "x.partial").mkdir()
    return truth, runs


def test_folder_gives_runs_and_blends_scored_exactly(folder, tmp_path):
    truth, runs = folder
    csv = tmp_path / "outside.csv"
    write_submission(csv, truth.ids[::-1], with_cosines(truth.embeddings[::-1].astype(np.float64), np.full(50, 0.4), np.random.default_rng(4)))
    entries = load_entries([runs], submissions={"outside": csv})
    assert [(e.name, e.kind) for e in entries] == [("a", "run"), ("b", "run"), ("tuned", "blend"), ("outside", "submission")]
    blend = entries[2]
    assert blend.predictor == "blend" and blend.config_hash
    assert blend.tuning["overfit"] == pytest.approx(0.03) and blend.tuning["fold_std"] == pytest.approx(0.01)
    scored = score_entries(entries, truth)
    assert scored.ids == truth.ids
    np.testing.assert_allclose(scored.scores.mean(axis=1), [0.6, 0.5, 0.7, 0.4], atol=1e-5)
    assert len(set(scored.digests)) == 4 and len(scored.image_set) == 16


def test_runs_folder_that_is_itself_a_run_or_blend(folder):
    _, runs = folder
    assert [e.name for e in find_entries(runs / "a")] == ["a"]
    assert [e.kind for e in find_entries(runs / "tuned")] == ["blend"]


def test_empty_folder_is_a_named_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no runs"):
        find_entries(tmp_path / "empty")
    with pytest.raises(RunError, match="not found"):
        find_entries(tmp_path / "missing")
    with pytest.raises(RunError, match="no entries"):
        load_entries([])


def test_entries_over_different_image_sets(folder):
    truth, runs = folder
    other = truth_run(50, prefix="zz")
    entries = find_entries(runs) + [entry_from_arrays("other", other.ids, other.embeddings)]
    with pytest.raises(ImageSetError, match="different image sets: 'other' lacks 50 ids"):
        score_entries(entries, truth)
    fewer = entry_from_arrays("fewer", truth.ids[:-1], truth.embeddings[:-1])
    with pytest.raises(ImageSetError, match="'fewer' lacks 1 ids"):
        score_entries(find_entries(runs) + [fewer], truth)


def test_same_ids_different_image_fingerprint(folder):
    truth, runs = folder
    changed = entry_from_arrays("changed", truth.ids, truth.embeddings, meta={"fingerprint": "fp2"})
    with pytest.raises(ImageSetError, match="same ids, different files"):
        score_entries(find_entries(runs) + [changed], truth)
    # imported submissions record the file's hash, not the image set's: no clash
    imported = entry_from_arrays("imp", truth.ids, truth.embeddings, meta={"fingerprint": "zz", "predictor": "external"})
    score_entries(find_entries(runs) + [imported], truth)


def test_missing_truth_ids(folder):
    truth, runs = folder
    partial = truth.select(truth.ids[5:])
    with pytest.raises(TruthError, match="lacks 5 of the 50 image ids"):
        score_entries(find_entries(runs), partial)


def test_truth_may_cover_more_images(folder):
    truth, runs = folder
    more = truth_run(60)
    more.embeddings[:50] = truth.embeddings
    scored = score_entries(find_entries(runs), more)
    assert scored.truth_extra == 10 and len(scored.ids) == 50


def test_duplicate_names(folder):
    _, runs = folder
    with pytest.raises(ConfigError, match="two entries are named 'a'"):
        load_entries([runs, runs / "a"])


def test_tuning_summary_ignores_missing_or_odd_keys():
    assert tuning_summary({"weights": [0.5]}) == {}
    assert tuning_summary({"in_sample": 0.6, "fold_scores": ["x"]}) == {"in_sample": 0.6}


def test_blend_as_written_by_the_tuner(tmp_path):
    """``ensemble.tune`` writes ``wall_s`` and names its submission file in best.json."""
    truth = truth_run(20)
    folder = tmp_path / "tune-out"
    write_submission(folder / "blend.csv", truth.ids, truth.embeddings)
    best = {"weights": {"a": 1.0}, "in_sample": 0.9, "out_of_fold": 0.85, "wall_s": 12.5, "submission": "blend.csv"}
    (folder / "best.json").write_text(json.dumps(best))
    (entry,) = find_entries(tmp_path)
    assert entry.kind == "blend" and entry.name == "tune-out" and entry.wall_time_s == 12.5
    assert score_entries([entry], truth).scores.mean() == pytest.approx(1.0, abs=1e-6)
    (folder / "best.json").write_text("[1, 2]")
    (folder / "blend.csv").rename(folder / "submission.csv")
    with pytest.raises(RunError, match="JSON object"):
        find_entries(tmp_path)
