"""Offline leaderboard simulation, the experiment record, and reports.

The leaderboard function is ``experiments.leaderboard.leaderboard`` (a subpackage of the same name,
so this package does not re-export the function under that name).
"""

from .entries import (
    Entry,
    entry_from_arrays,
    entry_from_blend,
    entry_from_run,
    entry_from_submission,
    find_entries,
    load_entries,
)
from .board import LeaderboardResult

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
