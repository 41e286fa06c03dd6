"""One timer for work done in stages: wall time and peak resident memory at the end of each stage."""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from typing import Iterator

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus its largest waited-for child so far, in MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(kb / 1024, 1)


class Timer:
    """Times named stages: ``with timer.stage("clean"): ...``.

    ``times`` holds ``<stage>_s`` wall seconds (2 decimals) in stage order; ``peak_rss_mb`` holds the
    process's peak RSS in MB when each stage ended. Peaks are a high-water mark (the kernel's, which
    is never reset here, so other measurements in the process stay true): the stage where the
    value rises is the one that needed the memory. A stage that raises records nothing.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name``."""
        t = time.perf_counter()
        yield
        self.times[f"{name}_s"] = round(time.perf_counter() - t, 2)
        self.peak_rss_mb[name] = peak_rss_mb()
        log.debug("stage %s: %.2f s, peak RSS %.0f MB", name, self.times[f"{name}_s"], self.peak_rss_mb[name])

    def total_s(self) -> float:
        """Wall seconds since the timer was made."""
        return round(time.perf_counter() - self.started, 2)

    def record(self) -> dict:
        """``{"times": {..., "total_s"}, "stage_peak_rss_mb": {...}, "peak_rss_mb"}`` for a manifest."""
        return {"times": {**self.times, "total_s": self.total_s()}, "stage_peak_rss_mb": dict(self.peak_rss_mb),
                "peak_rss_mb": peak_rss_mb()}
