"""The one progress bar of every command: per item, with rate and time left.

On a terminal it is a tqdm bar redrawn in place; on a file or a CI log (not a terminal) it prints a
few summary lines instead (each quarter reached at most every ``SUMMARY_EVERY_S`` seconds, then the end),
never carriage-return redraws. ``--quiet`` (see :mod:`promptblend.cli`) turns every bar off.
Bars write to the console stream the command started with, so library output routed to the log file
never mixes with them.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Iterable

SUMMARY_EVERY_S = 30.0

_state: dict[str, Any] = {"stream": None, "enabled": True}


def configure(stream: IO[str] | None, enabled: bool = True) -> None:
    """Where bars go (None: the current ``sys.stderr``) and whether any is shown (``--quiet``: not)."""
    _state.update(stream=stream, enabled=enabled)


def console_stream() -> IO[str]:
    """The stream bars write to: the console of the running command, else ``sys.stderr``."""
    return _state["stream"] or sys.stderr


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SummaryBar:
    """tqdm's interface (``update``, ``close``, ``n``, iteration, context manager) printing a few lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, stream: IO[str] | None = None, **_: Any) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.stream = stream or console_stream()
        self.closed = False
        self._t0 = self._last = time.monotonic()
        self._quarter = self._quarter_of(initial)
        self.postfix = ""

    def _quarter_of(self, n: int) -> int:
        return int(4 * n / self.total) if self.total else 0

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _rate(self) -> tuple[float, float]:
        elapsed = time.monotonic() - self._t0
        done = self.n - self.initial
        return elapsed, (done / elapsed if elapsed > 0 else 0.0)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items; print a line when a new quarter is reached (at most every 30 s)."""
        self.n += n
        quarter = self._quarter_of(self.n)
        now = time.monotonic()
        if quarter > self._quarter and quarter < 4 and now - self._last >= SUMMARY_EVERY_S:
            self._quarter, self._last = quarter, now
            rate = self._rate()[1]
            left = f", {_duration((self.total - self.n) / rate)} left" if rate and self.total else ""
            self._line(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%), "
                       f"{rate:.3g} {self.unit}/s{left}{self.postfix}")

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Remember the figures shown with the next line (tqdm's ``set_postfix``)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = "; " + ", ".join(f"{k}={v}" for k, v in items.items()) if items else ""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the bar (tqdm's ``set_description``)."""
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw."""

    def close(self) -> None:
        """Print the closing line: items, wall time and rate."""
        if self.closed:
            return
        self.closed = True
        elapsed, rate = self._rate()
        total = f"/{self.total:,}" if self.total is not None and self.n != self.total else ""
        self._line(f"{self.desc}: {self.n:,}{total} {self.unit} in {_duration(elapsed)} ({rate:.3g} {self.unit}/s)"
                   f"{self.postfix}")

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "SummaryBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any):
    """A progress bar over ``iterable`` or up to ``total`` (tqdm's keyword arguments: ``total``, ``desc``,
    ``unit``, ``initial``, ``leave``, ...): a tqdm bar on a terminal, :class:`SummaryBar` lines elsewhere,
    a silent one when ``disable`` or ``--quiet``."""
    from tqdm.auto import tqdm

    stream = console_stream()
    if disable or not _state["enabled"]:
        return tqdm(iterable, disable=True, **kwargs)
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    for tqdm_only in ("leave", "smoothing", "position", "dynamic_ncols", "mininterval", "miniters", "file"):
        kwargs.pop(tqdm_only, None)
    return SummaryBar(iterable, stream=stream, **kwargs)
