"""The shared stage timer: wall seconds per stage in order, peak RSS as a high-water mark."""

from __future__ import annotations

import time

import numpy as np
import pytest

from promptblend.timing import Timer, peak_rss_mb


def test_stages_are_timed_in_order_and_memory_rises_where_it_was_needed():
    timer = Timer()
    with timer.stage("sleep"):
        time.sleep(0.2)
    with timer.stage("allocate"):
        block = np.ones(300 * 2**20 // 8)  # 300 MB touched
        del block
    assert list(timer.times) == ["sleep_s", "allocate_s"]
    assert 0.2 <= timer.times["sleep_s"] < 5
    assert timer.peak_rss_mb["allocate"] >= timer.peak_rss_mb["sleep"] + 250 or timer.peak_rss_mb["sleep"] > 300
    record = timer.record()
    assert record["times"]["total_s"] >= timer.times["sleep_s"] + timer.times["allocate_s"] - 0.01
    assert record["stage_peak_rss_mb"] == timer.peak_rss_mb
    assert record["peak_rss_mb"] >= max(timer.peak_rss_mb.values())
    assert peak_rss_mb() >= record["peak_rss_mb"]


def test_a_stage_that_raises_records_nothing():
    timer = Timer()
    with pytest.raises(ValueError), timer.stage("broken"):
        raise ValueError("boom")
    assert timer.times == {} and timer.peak_rss_mb == {}
