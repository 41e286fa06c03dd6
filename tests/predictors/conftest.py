"""Predictor test fixtures: a few real images, one torch thread (the test machine's cores are shared)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Two intra-op threads on two busy shared cores run ~10x slower than one; tests use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mixed_images(tmp_path_factory, drawbench, kaggle_sample) -> Path:
    """4 drawbench JPEGs + 2 Kaggle PNGs in one folder (a session-wide read-only copy)."""
    dst = tmp_path_factory.mktemp("mixed") / "images"
    dst.mkdir()
    for src, n in ((drawbench / "images", 4), (kaggle_sample / "images", 2)):
        for p in sorted(src.iterdir())[:n]:
            shutil.copy(p, dst / p.name)
    return dst
