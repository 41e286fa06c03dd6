"""Offline leaderboard simulation, the experiment record, and reports."""

from .board import LeaderboardResult, run_leaderboard
from .entries import Entry, entry_from_arrays, entry_from_blend, entry_from_run, entry_from_submission, find_entries, load_entries

__all__ = [
    "Entry",
    "LeaderboardResult",
    "entry_from_arrays",
    "entry_from_blend",
    "entry_from_run",
    "entry_from_submission",
    "find_entries",
    "load_entries",
    "run_leaderboard",
]
