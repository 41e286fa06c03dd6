"""Find runs, and line them up (and the truth) on the same image ids, or fail with a message that says why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from promptblend.errors import AlignmentError, BlendError, ConfigError
from promptblend.runs import Run, list_runs, load_run
from promptblend.vectors import check_embeddings

log = logging.getLogger(__name__)


@dataclass
class Aligned:
    """Runs stacked on common ids: ``stack`` is K x N x 384 float32, ``truth`` N x 384 (unit) or None."""

    ids: list[str]
    names: list[str]
    stack: np.ndarray
    truth: np.ndarray | None
    dropped: dict[str, int] = field(default_factory=dict)


def load_runs(paths: Sequence[str]) -> list[Run]:
    """Runs from folders that are runs or hold runs."""
    found = [p for path in paths for p in list_runs(path)]
    if not found:
        raise ConfigError(f"no runs found in {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


def _check_names(runs: Sequence[Run], min_runs: int) -> list[str]:
    if len(runs) == 0:
        raise BlendError("no runs to blend")
    if len(runs) < min_runs:
        raise BlendError(f"blending needs at least {min_runs} runs, got {len(runs)} ({runs[0].name})")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BlendError(f"run names must be unique (weights are keyed by name): {dup} repeat")
    return names


def align(runs: Sequence[Run], truth: Run | None = None, intersect: bool = False, min_runs: int = 2) -> Aligned:
    """Stack ``runs`` on the ids of the first run (or, with ``intersect``, the ids all share).

    Without ``intersect`` every run (and the truth) must hold exactly the same ids; with it, ids
    missing anywhere are dropped and counted per source (``Aligned.dropped``).
    """
    names = _check_names(runs, min_runs)
    sources = [(r.name, r) for r in runs] + ([("truth", truth)] if truth is not None else [])
    for name, r in sources:
        check_embeddings(r.embeddings, n=len(r.ids), what=f"{name} embeddings")
    base = runs[0].ids
    common = set(base)
    for _, r in sources[1:]:
        common &= set(r.ids)
    dropped = {name: len(r.ids) - len(common) for name, r in sources if len(r.ids) != len(common)}
    if dropped and not intersect:
        detail = ", ".join(f"{name} has {len(r.ids)}" for name, r in sources)
        raise AlignmentError(
            f"runs and truth cover different images ({detail}; {len(common)} in common): "
            "pass --intersect (intersect=True) to use the common ids"
        )
    ids = [i for i in base if i in common] if dropped else list(base)
    if not ids:
        raise AlignmentError("runs and truth have no image ids in common")
    if dropped:
        log.warning("using %d common ids; dropped %s", len(ids), ", ".join(f"{k}: {v}" for k, v in dropped.items()))
    stack = np.stack([r.embeddings if r.ids == ids else r.select(ids).embeddings for r in runs])
    y = None
    if truth is not None:
        y = (truth.embeddings if truth.ids == ids else truth.select(ids).embeddings).astype(np.float32)
        y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return Aligned(ids, names, stack, y, dropped)
