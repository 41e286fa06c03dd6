"""predictors.run over the same set as a folder, as shards and as Parquet: the same rows; one truncated
image skipped alike (the same id in meta.json) with --skip-bad, one named error without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from imageset_sources import SOURCES, samples, write_source

from predictors.run import main
from promptblend.runs import list_runs, load_run


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    rows = samples(7, bad=4)
    return {kind: write_source(kind, rows, root / kind) for kind in SOURCES}


def _run(source, out, *extra):
    return main(["clip-regressor-tiny", "--images", str(source), "--out", str(out), "--workers", "0",
                 "--batch-size", "2", "--quiet", *extra])


def test_skip_bad_gives_the_same_rows_and_skipped_id_from_every_source(sets, tmp_path, capsys):
    runs = {}
    for kind, source in sets.items():
        assert _run(source, tmp_path / kind, "--skip-bad") == 0
        assert "skipped 1 bad image(s) (listed in meta.json): img04" in capsys.readouterr().out
        (path,) = list_runs(tmp_path / kind)
        runs[kind] = load_run(path)
    ref = runs["folder"]
    assert ref.ids == ["img00", "img01", "img02", "img03", "img05", "img06"]
    for kind, run in runs.items():
        assert run.ids == ref.ids, kind
        np.testing.assert_allclose(run.embeddings, ref.embeddings, atol=1e-6, err_msg=kind)
        meta = json.loads((run.path / "meta.json").read_text())
        assert [what for what, _ in meta["skipped"]] == ["img04"], kind
        assert "truncated" in meta["skipped"][0][1]
        assert run.path.name == ref.path.name  # the same content: the same run key


def test_without_skip_bad_a_bad_image_is_one_named_error(sets, tmp_path, capsys):
    for kind, source in sets.items():
        assert _run(source, tmp_path / kind) == 2, kind
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: bad image") and "img04" in err[-1], (kind, err)
        assert not any("Traceback" in line for line in err), kind
