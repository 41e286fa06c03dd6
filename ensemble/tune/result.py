"""What a tuning found: :class:`TuneResult` (its JSON-able part goes into ``best.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..blend import BlendParams
from ..budget import BudgetChoice


@dataclass
class TuneResult:
    """What :func:`ensemble.tune.tune` found; ``params`` blends new runs via :func:`ensemble.blend.blend_runs`."""

    params: BlendParams
    in_sample: float
    out_of_fold: float | None
    fold_scores: list[float]
    fold_in_sample: list[float]
    gradient_optimum: float
    gradient_gap: float
    search_gap: float | None
    single_scores: dict[str, float]
    n_images: int
    n_groups: int | None
    largest_group: int | None
    dropped: dict[str, int]
    studies: list[str]
    storage: str
    sampler: str
    trials: int
    folds: int
    seed: int
    snap: dict | None = None
    fold_weights: list[dict[str, float]] = field(default_factory=list)
    warm_start: bool = True
    image_set: str | None = None
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    fold_sizes: list[int] = field(default_factory=list)
    pair_split: dict | None = None
    out: Path | None = None
    submission: Path | None = None
    submission_of: str | None = None  # "test" (the blend applied to --test-runs) or "tuned" (the tuned images)
    mean_source: str | None = None  # where mean_vector.npy came from, for the boards' mean-vector baseline
    budget: "BudgetChoice | None" = None

    def summary(self) -> dict:
        """The JSON-able fields written to best.json (besides the blend params)."""
        d = asdict(self)
        for k in ("params", "out", "submission", "budget"):
            d.pop(k)
        d["budget"] = self.budget.summary() if self.budget is not None else None
        d["submission"] = self.submission.name if self.submission else None
        return d
