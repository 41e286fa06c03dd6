"""The demo uses every core the process may run on (torch threads), with DataLoader workers for decoding."""

from __future__ import annotations

import os

import pytest

from experiments.demo.pipeline import default_threads
from predictors.run import default_workers


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_the_demo_uses_every_core(monkeypatch, cores):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert default_threads() == cores
    assert default_workers() == min(4, cores - 1)  # decoding beside the main process on a 2-core machine too
