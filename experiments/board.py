"""What a leaderboard computed (:class:`LeaderboardResult`): read by the leaderboard API, its pages and
the record, so it lives apart from all three (none of them imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass

from .entries import Entry, Scored
from .simulate import PUBLIC_FRACTION, Comparison, Simulation


@dataclass
class LeaderboardResult:
    """What a leaderboard computed: rows (best first), the simulation, per-image scores, entries."""

    rows: list[dict]
    simulation: Simulation
    scored: Scored
    entries: list[Entry]
    comparison: Comparison | None = None
    truth: str = ""
    public_fraction: float = PUBLIC_FRACTION

    @property
    def best(self) -> str:
        """Name of the entry with the highest whole-set score."""
        return self.rows[0]["name"]

    @property
    def order(self) -> list[int]:
        """Entry positions (in ``entries`` order) from best to worst."""
        return [self.simulation.names.index(r["name"]) for r in self.rows]
