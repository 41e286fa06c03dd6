"""Under CI=true a skip of any kind (skip, skipif, importorskip, a missing part) fails; locally it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPS = '''
import pytest

def test_skip():
    pytest.skip("../shared/data is absent")

@pytest.mark.skipif(True, reason="PROMPTBLEND_TEST_PG_URL is not set")
def test_skipif():
    pass

def test_importorskip():
    pytest.importorskip("no_such_module_for_ci")

@pytest.mark.xfail(reason="a known gap", strict=True)
def test_xfail():
    raise AssertionError

def test_passes():
    pass
'''


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_skip_fails_under_ci(tmp_path, ci):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_parts.py").write_text(SKIPS)
    env = {**os.environ, "CI": ci, "PYTEST_ADDOPTS": ""}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    summary = res.stdout.strip().splitlines()[-1]
    if ci:
        assert res.returncode == 1 and "skipped" not in summary, res.stdout[-2000:]  # skipif fails at set-up: an error
        assert res.stdout.count("a skip fails under CI=true") >= 3
    else:
        assert res.returncode == 0 and "1 passed, 3 skipped, 1 xfailed" in summary, res.stdout[-2000:]
