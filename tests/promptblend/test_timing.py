"""The shared stage timer: wall seconds per stage in order, peak RSS as a high-water mark."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from promptblend.timing import Timer, peak_rss_mb


def test_stages_are_timed_in_order():
    timer = Timer()
    with timer.stage("sleep"):
        time.sleep(0.2)
    with timer.stage("allocate"):
        block = np.ones(300 * 2**20 // 8)  # 300 MB touched
        del block
    assert list(timer.times) == ["sleep_s", "allocate_s"]
    assert 0.2 <= timer.times["sleep_s"] < 5
    assert timer.peak_rss_mb["allocate"] >= timer.peak_rss_mb["sleep"]
    record = timer.record()
    assert record["times"]["total_s"] >= timer.times["sleep_s"] + timer.times["allocate_s"] - 0.01
    assert record["stage_peak_rss_mb"] == timer.peak_rss_mb
    assert record["peak_rss_mb"] >= max(timer.peak_rss_mb.values())
    assert peak_rss_mb() >= record["peak_rss_mb"]


def test_memory_rises_in_the_stage_that_needed_it():
    """In a fresh interpreter, so the rise must show: this one's high-water mark may be past 300 MB already, and
    Linux hands a process its parent's RSS at fork as its starting peak, so a small shell forks the child."""
    code = textwrap.dedent("""
        import json
        import numpy as np
        from promptblend.timing import Timer
        timer = Timer()
        with timer.stage("small"):
            pass
        with timer.stage("allocate"):
            block = np.ones(300 * 2**20 // 8)  # 300 MB touched
            del block
        with timer.stage("after"):
            pass
        print(json.dumps(timer.peak_rss_mb))
    """)
    shell = ["sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, code]
    peaks = json.loads(subprocess.run(shell, capture_output=True, text=True, check=True).stdout)
    assert peaks["small"] < 250, peaks  # the baseline of a bare interpreter with numpy
    assert peaks["allocate"] >= peaks["small"] + 250, peaks
    assert peaks["after"] >= peaks["allocate"], peaks  # a high-water mark never falls


def test_a_stage_that_raises_records_nothing():
    timer = Timer()
    with pytest.raises(ValueError), timer.stage("broken"):
        raise ValueError("boom")
    assert timer.times == {} and timer.peak_rss_mb == {}
