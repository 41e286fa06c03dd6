"""Shared fixtures: offline mode, the ../shared data folder, temp copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(os.environ.get("PROMPTBLEND_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (tests that need it skip when it is absent)."""
    if not DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return DATA


@pytest.fixture(scope="session")
def kaggle_sample(shared_data) -> Path:
    """The competition's 7-image sample folder."""
    return shared_data / "kaggle-sample"


@pytest.fixture(scope="session")
def drawbench(shared_data) -> Path:
    """400 real SD 1.x JPEGs with prompts."""
    return shared_data / "drawbench-sd1"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep each test session's cache (truth runs, label embeddings...) out of the user's home."""
    monkeypatch.setenv("PROMPTBLEND_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def copy_images(tmp_path):
    """Copy a few images of a folder into a fresh temp folder (tests never modify ../shared)."""

    def _copy(src: Path, n: int | None = None) -> Path:
        dst = tmp_path / "images"
        dst.mkdir(exist_ok=True)
        files = sorted(p for p in Path(src).iterdir() if p.is_file())[:n]
        for p in files:
            shutil.copy(p, dst / p.name)
        return dst

    return _copy
