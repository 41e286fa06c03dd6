"""Offline leaderboard simulation, the experiment record, and reports.

The leaderboard function is ``experiments.leaderboard.leaderboard`` (the module of the same name is
the CLI, so the package does not re-export the function under that name).
"""

from .board import LeaderboardResult
from .entries import (
    Entry,
    entry_from_arrays,
    entry_from_blend,
    entry_from_run,
    entry_from_submission,
    find_entries,
    load_entries,
)

__all__ = [
    "Entry",
    "LeaderboardResult",
    "entry_from_arrays",
    "entry_from_blend",
    "entry_from_run",
    "entry_from_submission",
    "find_entries",
    "load_entries",
]
