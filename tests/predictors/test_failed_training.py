"""A failed training leaves resumable work or nothing, and its one error line says which."""

from __future__ import annotations

import pytest
from shapes import make_shapes

from predictors.clip_regressor.train.__main__ import main as regressor_main

pytestmark = pytest.mark.slow
ARGS = ["--config", "tiny", "--num-workers", "0", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes") / "images", 24, size=32, seed=3)


def test_a_training_that_fails_before_its_first_checkpoint_leaves_no_folder(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert regressor_main(["--images", str(shapes), "--out", str(out), "--epochs", "1", "--set", "lr=1e20", *ARGS]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].endswith(f"(nothing to resume: {out} removed)"), err
    assert not out.exists()


def test_a_failure_after_a_checkpoint_keeps_the_folder_and_says_so(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert regressor_main(["--images", str(shapes), "--out", str(out), "--epochs", "1", *ARGS]) == 0
    capsys.readouterr()
    # the same folder with other data refuses: the work there is kept, and the line says so
    assert regressor_main(["--images", str(shapes), "--out", str(out), "--epochs", "1", "--set", "hidden=7", *ARGS]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].endswith(f"(work kept in {out}: run the same command again to resume)"), err
    assert (out / "checkpoint.safetensors").is_file()
