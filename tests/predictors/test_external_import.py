"""Outside predictions (a submission CSV or a run folder) imported as runs."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.external import import_external
from promptblend.errors import RunError, SubmissionError
from promptblend.runs import list_runs, load_run
from promptblend.submission import read_submission


def test_import_sample_submission(kaggle_sample, tmp_path):
    run = import_external(kaggle_sample / "sample_submission.csv", tmp_path / "runs", name="kaggle")
    ids, emb = read_submission(kaggle_sample / "sample_submission.csv")
    back = load_run(list_runs(tmp_path / "runs")[0])
    assert back.ids == ids == run.ids and back.meta["predictor"] == "external"
    np.testing.assert_allclose(back.embeddings, emb, atol=1e-7)
    # a run folder imports too and keeps its rows
    again = import_external(back.path, tmp_path / "runs2")
    np.testing.assert_array_equal(again.embeddings, back.embeddings)


def test_import_bad_sources(tmp_path):
    (tmp_path / "notrun").mkdir()
    with pytest.raises(RunError, match="not a run"):
        import_external(tmp_path / "notrun", tmp_path / "runs")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SubmissionError, match="header"):
        import_external(tmp_path / "x.csv", tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not list_runs(tmp_path / "runs")
