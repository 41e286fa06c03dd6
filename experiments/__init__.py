"""Offline leaderboard simulation, the experiment record, and reports."""

from .entries import Entry, entry_from_arrays, entry_from_blend, entry_from_run, entry_from_submission, find_entries, load_entries
from .leaderboard import LeaderboardResult, leaderboard

__all__ = [
    "Entry",
    "LeaderboardResult",
    "entry_from_arrays",
    "entry_from_blend",
    "entry_from_run",
    "entry_from_submission",
    "find_entries",
    "leaderboard",
    "load_entries",
]
