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


class RunStack:
    """K runs on common ids without a copy: each run's own array (in memory or memory-mapped) and the
    rows of it that the common ids pick (None: all, in order).

    Indexed like a K x N x D array: ``stack[j]`` is run ``j`` on the common ids (the run's own array
    when it needs no reordering), ``stack[j, a:b]`` a block of its rows; ``shape`` and ``len`` as the array's.
    """

    def __init__(self, arrays: Sequence[np.ndarray], rows: Sequence[np.ndarray | None]):
        self.arrays, self.rows = list(arrays), list(rows)
        n = {len(a) if r is None else len(r) for a, r in zip(self.arrays, self.rows)}
        if len(n) > 1:
            raise AlignmentError(f"runs of a stack cover different numbers of images: {sorted(n)}")
        self.shape = (len(self.arrays), n.pop() if n else 0, self.arrays[0].shape[1] if self.arrays else 0)
        self.dtype = self.arrays[0].dtype if self.arrays else np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        j, part = key if isinstance(key, tuple) else (key, slice(None))
        array, rows = self.arrays[j], self.rows[j]
        return array[part] if rows is None else array[rows[part]]

    @property
    def nbytes(self) -> int:
        """Bytes of the runs' rows it covers."""
        return self.shape[0] * self.shape[1] * self.shape[2] * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """A K x N x D copy (for callers that want a plain array; the tuner never makes one)."""
        out = np.stack([self[j] for j in range(len(self))]) if len(self) else np.zeros(self.shape, self.dtype)
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class Aligned:
    """Runs on common ids: ``stack`` is a K x N x 384 :class:`RunStack` of the runs' own float32 arrays
    (no copy), ``truth`` N x 384 (unit) or None."""

    ids: list[str]
    names: list[str]
    stack: RunStack
    truth: np.ndarray | None
    dropped: dict[str, int] = field(default_factory=dict)


def _rows_of(run: Run, ids: list[str]) -> np.ndarray | None:
    """Row of each of ``ids`` in ``run`` (None: the run holds exactly ``ids`` in order)."""
    return None if run.ids == ids else run.rows_of(ids)


def load_runs(paths: Sequence[str]) -> list[Run]:
    """Runs from folders that are runs or hold runs (embeddings memory-mapped)."""
    found = [p for path in paths for p in list_runs(path)]
    if not found:
        raise ConfigError(f"no runs found in {', '.join(map(str, paths))}")
    runs: list[Run] = []
    for p in found:
        run = load_run(p, mmap=True)  # read in place: the tuner never copies the runs
        if runs and run.ids == runs[-1].ids:
            run.ids = runs[-1].ids  # one list of ids for runs of the same images (50 runs: 50 lists)
        runs.append(run)
    return runs


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
    stack = RunStack([r.embeddings for r in runs], [_rows_of(r, ids) for r in runs])
    y = None
    if truth is not None:
        rows = _rows_of(truth, ids)
        y = np.array(truth.embeddings if rows is None else truth.embeddings[rows], np.float32)
        y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return Aligned(ids, names, stack, y, dropped)
