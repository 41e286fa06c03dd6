"""Choose predictors under an inference-time budget: the score-time frontier of predictor subsets.

Kaggle's limit was 9 GPU hours for about 16,000 test images. A predictor's projected cost is its
recorded seconds per image (``meta.json``, measured when its run was made) times the number of
test images; a subset costs the sum of its members (predictors run one after another). Each subset
is scored by the out-of-fold CV score of its gradient-optimal blend on the tuning's own folds (the
statistics the studies use, restricted to the subset's columns), so "adds score" means "adds
held-out score". Subsets are enumerated exhaustively up to :data:`EXHAUSTIVE_MAX` runs, past that
by greedy forward selection (each step adds the run with the best score). The chosen blend is the
best-scoring subset whose projected time fits the budget.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from promptblend.errors import ConfigError

from .objective import BlendObjective, MeanStats, RawStats
from .optimum import gradient_optimum

#: Up to this many runs every subset is scored; past it, greedy forward selection.
EXHAUSTIVE_MAX = 8

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``'9h'``, ``'90m'``, ``'1.5h'``, ``'3600s'`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d)?\s*", str(text))
        if not m:
            raise ConfigError(f"time budget must look like 9h, 90m, 3600s or 3600, got {text!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not np.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"time budget must be positive, got {text!r}")
    return seconds


def seconds_per_image(meta: dict) -> float | None:
    """A run's recorded inference seconds per image (``meta.json``), or None when it has none."""
    value = meta.get("seconds_per_image")
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) and value >= 0 else None


@dataclass(frozen=True)
class Candidate:
    """One predictor subset: its members, projected seconds on the test set and out-of-fold score."""

    runs: tuple[str, ...]
    seconds: float
    score: float

    @property
    def hours(self) -> float:
        """Projected hours."""
        return self.seconds / 3600.0


@dataclass
class BudgetChoice:
    """What the budget allowed: every scored subset, the frontier, the chosen one and who was dropped."""

    budget_s: float
    test_images: int
    seconds_per_image: dict[str, float]
    untimed: list[str]
    candidates: list[Candidate]
    chosen: Candidate
    dropped: dict[str, str]

    @property
    def frontier(self) -> list[Candidate]:
        """Subsets no other beats on both time and score, fastest first."""
        return pareto_frontier(self.candidates)

    def summary(self) -> dict:
        """JSON-able record for ``best.json``."""
        return {
            "budget_s": self.budget_s, "test_images": self.test_images,
            "seconds_per_image": self.seconds_per_image, "untimed": self.untimed,
            "chosen": {"runs": list(self.chosen.runs), "seconds": self.chosen.seconds, "score": self.chosen.score},
            "dropped": self.dropped,
            "frontier": [{"runs": list(c.runs), "seconds": c.seconds, "score": c.score} for c in self.frontier],
        }


def pareto_frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The subsets that no faster-or-equal subset beats in score, fastest first."""
    best = -np.inf
    front = []
    for c in sorted(candidates, key=lambda c: (c.seconds, -c.score)):
        if c.score > best + 1e-12:
            front.append(c)
            best = c.score
    return front


def _restrict(raw: RawStats, mean: MeanStats | None, cols: Sequence[int]) -> tuple[RawStats, MeanStats | None]:
    """The statistics of the runs ``cols`` only."""
    c = np.asarray(cols, np.int64)
    sub = raw.select(c)
    return sub, (None if mean is None else MeanStats(mean.runs[:, c], mean.truth, mean.sq))


def _oof_score(plan, cols: Sequence[int]) -> float:
    """Pooled out-of-fold score of the subset ``cols``' gradient-optimal blend (in-sample without folds)."""
    splits = list(zip(plan.jobs[:-1], plan.tests)) or [(plan.final, plan.final.rows)]
    total, count = 0.0, 0
    for job, test in splits:
        norms = job.space.norm_options
        train_raw, train_mean = _restrict(plan.raw.take(job.rows), None if job.mean is None else job.mean.take(job.rows), cols)
        test_raw, test_mean = _restrict(plan.raw.take(test), None if job.mean is None else job.mean.take(test), cols)
        if not cols:  # the mean vector alone
            if test_mean is None:
                return -np.inf
            cos = test_mean.truth / np.sqrt(max(test_mean.sq, 1e-300))
        else:
            fits = [(gradient_optimum(BlendObjective(train_raw, norm, train_mean)), norm) for norm in norms]
            (c, _), norm = max(fits, key=lambda f: f[0][1])
            cos = BlendObjective(test_raw, norm, test_mean).cosines(c)
        total += float(cos.sum())
        count += len(cos)
    return total / max(count, 1)


def _subsets(plan, k: int) -> list[tuple[int, ...]]:
    """Every subset (mean vector alone included when the plan has one) for small ``k``."""
    first = 0 if plan.final.mean is not None else 1
    return [s for r in range(first, k + 1) for s in itertools.combinations(range(k), r)]


def choose_under_budget(plan, runs_meta: Sequence[dict], budget: str | float, test_images: int) -> BudgetChoice:
    """Score predictor subsets of ``plan`` and pick the best whose projected time fits ``budget``.

    ``runs_meta``: each run's ``meta.json`` in the plan's run order. A run with no recorded seconds
    per image (an imported submission, an old run) is counted as free and listed in ``untimed``.
    """
    budget_s = parse_duration(budget)
    if test_images < 1:
        raise ConfigError(f"--test-images must be at least 1, got {test_images}")
    names = list(plan.data.names)
    spi = [seconds_per_image(m) for m in runs_meta]
    untimed = [n for n, s in zip(names, spi) if s is None]
    cost = np.array([0.0 if s is None else s * test_images for s in spi])
    scored: dict[tuple[int, ...], Candidate] = {}

    def score(cols: tuple[int, ...]) -> Candidate:
        if cols not in scored:
            scored[cols] = Candidate(tuple(names[i] for i in cols), float(cost[list(cols)].sum()), _oof_score(plan, cols))
        return scored[cols]

    k = len(names)
    if k <= EXHAUSTIVE_MAX:
        for cols in _subsets(plan, k):
            score(cols)
    else:  # greedy forward selection, every step also recorded
        chain: tuple[int, ...] = ()
        if plan.final.mean is not None:
            score(chain)
        while len(chain) < k:
            chain = max((tuple(sorted(chain + (j,))) for j in range(k) if j not in chain), key=lambda c: score(c).score)
    candidates = [c for c in scored.values() if np.isfinite(c.score)]
    fitting = [c for c in candidates if c.seconds <= budget_s and c.runs]
    if not fitting:
        fastest = min(names, key=lambda n: cost[names.index(n)])
        raise ConfigError(f"no predictor fits the time budget of {budget_s / 3600:.2f} h for {test_images} test images "
                          f"(the fastest, {fastest}, needs {cost[names.index(fastest)] / 3600:.2f} h)")
    chosen = max(fitting, key=lambda c: (c.score, -c.seconds))
    best_any = max(candidates, key=lambda c: c.score)
    dropped = {}
    for i, n in enumerate(names):
        if n in chosen.runs:
            continue
        if cost[i] > budget_s:
            why = f"alone needs {cost[i] / 3600:.2f} h > budget {budget_s / 3600:.2f} h"
        elif n in best_any.runs:
            why = (f"adds score (best blend without the budget {best_any.score:.5f} in {best_any.hours:.2f} h) "
                   f"but does not fit beside the chosen runs")
        else:
            why = "adds no held-out score within the budget"
        dropped[n] = why
    return BudgetChoice(budget_s, test_images, {n: s for n, s in zip(names, spi) if s is not None}, untimed,
                        sorted(candidates, key=lambda c: c.seconds), chosen, dropped)


def frontier_figure(choice: BudgetChoice):
    """Score against projected hours: every subset (grey), the frontier (line), the budget and the chosen blend."""
    from promptblend.figures import new_figure

    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.scatter([c.hours for c in choice.candidates], [c.score for c in choice.candidates], s=12, color="0.7",
               label="predictor subsets")
    front = choice.frontier
    ax.plot([c.hours for c in front], [c.score for c in front], "-o", color="tab:blue", ms=4, label="frontier")
    ax.axvline(choice.budget_s / 3600, color="tab:red", ls="--", lw=1, label=f"budget {choice.budget_s / 3600:g} h")
    ax.scatter([choice.chosen.hours], [choice.chosen.score], s=80, marker="*", color="tab:red", zorder=3, label="chosen")
    ax.set_xlabel(f"projected inference hours for {choice.test_images} test images")
    ax.set_ylabel("out-of-fold score")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig
