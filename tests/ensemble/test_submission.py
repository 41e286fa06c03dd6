"""Submission format: the exact Kaggle file, the metric, and every way a file can be wrong."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ensemble.score import score_submission
from promptblend.errors import SubmissionError
from promptblend.imagesets import read_prompts_csv
from promptblend.metric import cosine_rows, score
from promptblend.submission import (
    check_submission,
    read_submission,
    submission_from_prompts,
    write_submission,
)
from promptblend.truth import truth_run


def test_sample_submission_scores_one(kaggle_sample):
    truth = truth_run(kaggle_sample / "prompts.csv")
    ids, emb = read_submission(kaggle_sample / "sample_submission.csv")
    assert ids == truth.ids and emb.shape == (7, 384)
    assert abs(score(emb, truth.embeddings) - 1.0) < 1e-5
    assert abs(score_submission(kaggle_sample / "prompts.csv", kaggle_sample / "sample_submission.csv") - 1.0) < 1e-5


def test_writer_reproduces_sample_file(kaggle_sample, tmp_path):
    prompts = read_prompts_csv(kaggle_sample / "prompts.csv")
    out = submission_from_prompts(tmp_path / "sub.csv", list(prompts), list(prompts.values()))
    ref_lines = (kaggle_sample / "sample_submission.csv").read_text().splitlines()
    our_lines = out.read_text().splitlines()
    assert our_lines[0] == ref_lines[0] == "imgId_eId,val"
    assert [l.split(",")[0] for l in our_lines] == [l.split(",")[0] for l in ref_lines]
    ours = np.array([float(l.split(",")[1]) for l in our_lines[1:]])
    ref = np.array([float(l.split(",")[1]) for l in ref_lines[1:]])
    assert np.abs(ours - ref).max() <= 1e-6


def test_outside_submission_matches_independent_computation(kaggle_sample, tmp_path):
    """A submission built from other text scores what sentence-transformers says it should."""
    from sentence_transformers import SentenceTransformer

    from promptblend.text import scoring_model_path

    prompts = read_prompts_csv(kaggle_sample / "prompts.csv")
    guesses = ["a photo of something", "a bowl of ramen", "a painting", "a city at night", "a dog", "space", "food"]
    st = SentenceTransformer(str(scoring_model_path()), device="cpu")
    g = st.encode(guesses)
    t = st.encode(list(prompts.values()))
    expected = float(np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(g, t)]))
    # write un-normalised vectors by hand, as an outside notebook might
    lines = ["imgId_eId,val"] + [f"{i}_{e},{v:.9g}" for i, row in zip(prompts, g * 3.0) for e, v in enumerate(row)]
    (tmp_path / "outside.csv").write_text("\n".join(lines) + "\n")
    got = score_submission(kaggle_sample / "prompts.csv", tmp_path / "outside.csv")
    assert abs(got - expected) < 1e-6 and 0.0 < got < 0.9
    cli = subprocess.run(
        [sys.executable, "-m", "ensemble.score", "--truth", str(kaggle_sample / "prompts.csv"), "--submission", str(tmp_path / "outside.csv")],
        capture_output=True, text=True, check=True,
    )
    assert abs(float(cli.stdout.strip().splitlines()[-1]) - expected) < 1e-5


def _write(tmp_path, lines):
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _good_lines(ids=("a", "b")):
    return ["imgId_eId,val"] + [f"{i}_{e},0.05" for i in ids for e in range(384)]


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda L: ["imgId,val"] + L[1:], "header"),
        (lambda L: L[:-1], "not a multiple of 384"),
        (lambda L: L[:2] + [L[3], L[2]] + L[4:], "'a_1' was expected"),
        (lambda L: L[:10] + [L[10].replace("0.05", "nan")] + L[11:], "NaN/inf value at line 11"),
        (lambda L: L[:10] + [L[10].replace("0.05", "")] + L[11:], "empty values"),
        (lambda L: L[:1] + L[1:385] + L[1:385], "repeats ids"),
        (lambda L: L[:1] + [l.replace("a_", "a") for l in L[1:385]] + L[385:], "must start with <imgId>_0"),
        (lambda L: L[:200] + [L[200].replace("a_", "c_")] + L[201:], "'a_199' was expected"),
        (lambda L: ["imgId_eId,val"], "no rows|unreadable"),
    ],
)
def test_bad_submissions_named(tmp_path, mutate, match):
    with pytest.raises(SubmissionError, match=match):
        check_submission(_write(tmp_path, mutate(_good_lines())))


def test_check_against_image_folder(kaggle_sample, tmp_path):
    assert len(check_submission(kaggle_sample / "sample_submission.csv", images=kaggle_sample / "images")) == 7
    p = _write(tmp_path, _good_lines(("20057f34d", "zzz")))
    with pytest.raises(SubmissionError, match="6 missing .* 1 extra"):
        check_submission(p, images=kaggle_sample / "images")
    cli = subprocess.run([sys.executable, "-m", "ensemble.submission", "check", str(p), "--images", str(kaggle_sample / "images")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.startswith("error:") and len(cli.stderr.strip().splitlines()) == 1


def test_writer_refuses_bad_input_and_leaves_nothing(tmp_path):
    emb = np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)
    bad = emb.copy()
    bad[1, 5] = np.nan
    for ids, e in [(["a", "b", "c"], bad), (["a", "b"], emb), (["a", "a", "b"], emb), (["a", "b", "c"], emb[:, :100])]:
        with pytest.raises(Exception) as err:
            write_submission(tmp_path / "s.csv", ids, e)
        assert type(err.value).__module__ == "promptblend.errors"
        assert list(tmp_path.iterdir()) == []
    write_submission(tmp_path / "s.csv", ["a", "b", "c"], emb)
    ids, back = read_submission(tmp_path / "s.csv")
    np.testing.assert_allclose(cosine_rows(back, emb), 1, atol=1e-6)


def test_a_binary_file_is_refused_in_one_printable_line(tmp_path, capsys):
    import pickle

    from ensemble.submission import main

    path = tmp_path / "weights.pt"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and err.rstrip("\n").isprintable()
    assert "binary data, not a CSV" in err
