"""Fault-suite inputs, made once per session: drawn images, real prompts, synthetic runs (no ../shared
needed except where a test says so)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "predictors"))  # shapes.py


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """Drawn image sets, a prompt file, synthetic runs + truth, a tuned blend, special and unwritable outputs
    (see :func:`bad_inputs.make_inputs`)."""
    from bad_inputs import make_inputs, unlock_inputs

    root = tmp_path_factory.mktemp("fault-inputs")
    try:
        yield make_inputs(root)
    finally:
        unlock_inputs(root)
