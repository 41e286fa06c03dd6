"""Shared fixtures: offline mode, the ../shared data folder, temp copies, an unwritable folder; under
``CI=true`` a skip (a missing part: shared data, PostgreSQL, Chromium, Ray, modelscope...) is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(os.environ.get("PROMPTBLEND_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
#: Skip reasons CI accepts (substrings); every other skip under CI=true fails. Keep it empty.
CI_ALLOWED_SKIPS: tuple[str, ...] = ()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` a skip, whatever raised it (``skip``, ``skipif``, ``importorskip``), is a failure."""
    report = (yield).get_result()
    if not (CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"a skip fails under CI=true (a missing part must be installed): {reason}"


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
def unwritable_dir(tmp_path):
    """An empty folder nobody may write in: mode 0555 for a normal user; immutable (``chattr +i``) for root,
    whom modes do not stop."""
    path = tmp_path / "locked"
    path.mkdir()
    lock, unlock = (["chattr", "+i"], ["chattr", "-i"]) if os.geteuid() == 0 else (["chmod", "555"], ["chmod", "755"])
    res = subprocess.run([*lock, str(path)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot make an unwritable folder ({' '.join(lock)}): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([*unlock, str(path)], check=True)


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
