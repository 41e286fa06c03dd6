"""A full disk: EFBIG through RLIMIT_FSIZE in the child (no root needed) and ENOSPC on a small tmpfs (root):
one `error:` line naming the problem, exit 2, nothing published, no temp litter."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess

import pytest
from harness import cli, python_m, record, temp_litter

pytestmark = pytest.mark.slow


def _fsize_limit(nbytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


def _commands(inputs, out):
    """(name, command, what a finished output looks like) for each writer, with outputs larger than 150 KB."""
    return [
        ("predictors.run", python_m("predictors.run", "captioner-tiny", "--images", inputs / "images", "--out", out,
                                    "--quiet", "--workers", "0", "--threads", "1"), "*/embeddings.npy"),
        ("index.build", python_m("index.build", "--prompts", inputs / "prompts.txt", "--out", out, "--values-backend",
                                 "torch"), "manifest.json"),
        ("ensemble.tune", python_m("ensemble.tune", "--runs", inputs / "runs", "--truth", inputs / "truth_run", "--out",
                                   out, "--trials", "5", "--folds", "0", "--no-report", "--no-progress"), "best.json"),
        ("clip_regressor.train", python_m("predictors.clip_regressor.train", "--images", inputs / "train_images", "--out",
                                          out, "--config", "tiny", "--epochs", "1", "--num-workers", "0",
                                          "--no-progress", "--device", "cpu"), "model.safetensors"),
    ]


def _check(name, res, out, published, how):
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    record(f"| {name} | {how} | {res.returncode} | {lines[0] if len(lines) == 1 else lines} |")
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert any(w in lines[0] for w in ("file size limit", "no space left", "disk space", "short write", "disk full")), lines[0]
    assert not list(out.glob(published)), "a finished output appeared on a full disk"
    assert not temp_litter(out.parent), "temp files left beside (or inside) the output"  # atomic temps are siblings


@pytest.mark.parametrize("which", range(4), ids=["predictors.run", "index.build", "ensemble.tune", "clip_regressor.train"])
def test_file_size_limit_is_one_named_error(inputs, tmp_path, which):
    name, cmd, published = _commands(inputs, tmp_path / "out")[which]
    res = cli(cmd, preexec_fn=_fsize_limit(150_000))
    _check(name, res, tmp_path / "out", published, "RLIMIT_FSIZE 150 KB")


@pytest.fixture
def small_disk(tmp_path):
    """A 30 MB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mount not permitted: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("which", range(4), ids=["predictors.run", "index.build", "ensemble.tune", "clip_regressor.train"])
def test_a_full_tmpfs_is_one_named_error(inputs, small_disk, which):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave ~100 KB free
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - 100_000))
    name, cmd, published = _commands(inputs, small_disk / "out")[which]
    res = cli(cmd)
    _check(name, res, small_disk / "out", published, "30 MB tmpfs, 100 KB free")
