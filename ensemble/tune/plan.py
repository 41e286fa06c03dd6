"""The CV plan of a tuning: grouped folds, one study (a :class:`Job`) per fold plus the final study."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from promptblend.errors import ConfigError
from promptblend.vectors import check_embeddings, l2_normalise

from ..align import Aligned
from ..objective import BlendObjective, MeanStats, RawStats, mean_stats_many, raw_stats
from ..space import BlendSpace


@dataclass
class Job:
    """One study: its name, the images it is tuned on, its mean vector ``mu`` and mean-vector terms
    (``mean``: of all images; the study reads its ``rows``)."""

    name: str
    rows: np.ndarray
    space: BlendSpace
    n_trials: int
    mu: np.ndarray | None = None
    mean: MeanStats | None = None
    fingerprint: str | None = None
    _objectives: dict | None = field(default=None, init=False, repr=False, compare=False)

    def objectives(self, raw: RawStats) -> dict[bool, BlendObjective]:
        """The objective per normalisation setting the study may pick, built once (read in place from
        ``raw`` over the study's rows) and shared by the gradient optimum, the trials and the
        evaluation until :meth:`release`."""
        if self._objectives is None:
            self._objectives = {norm: BlendObjective(raw, norm, self.mean, rows=self.rows)
                                for norm in self.space.norm_options}
        return self._objectives

    def release(self) -> None:
        """Drop the objectives (their memory: T x N floats each); the next use builds them again."""
        self._objectives = None

    def __getstate__(self) -> dict:
        """Pickled for worker processes without the objectives (each worker builds its own)."""
        return {**self.__dict__, "_objectives": None}

    def trial_function(self, raw: RawStats) -> Callable:
        """``trial -> score`` for Optuna (the objectives are built at the first trial, if not before)."""

        def objective(trial) -> float:
            c, norm = self.space.suggest(trial)
            return self.objectives(raw)[norm](c)

        return objective


@dataclass
class CvPlan:
    """The aligned data, its sufficient statistics, the folds and the studies (folds first, final last)."""

    data: Aligned
    raw: RawStats | None  # None once released
    space: BlendSpace
    jobs: list[Job]
    tests: list[np.ndarray]
    fold_of: np.ndarray | None = None
    groups: np.ndarray | None = None
    pair_split: dict | None = None

    @property
    def final(self) -> Job:
        """The study on all images, whose best trial is the blend."""
        return self.jobs[-1]

    @property
    def folds(self) -> int:
        """Number of outer CV folds (0: no CV)."""
        return len(self.tests)

    @property
    def n_groups(self) -> int | None:
        """Prompt-similarity groups (None without CV)."""
        return None if self.groups is None else int(np.bincount(self.groups).size)

    @property
    def largest_group(self) -> int | None:
        """Images in the largest group (None without CV)."""
        return None if self.groups is None else int(np.bincount(self.groups).max())

    def release(self) -> None:
        """Free the objectives and the per-image statistics once the studies are evaluated (the
        outputs need the data and the folds only); they are not used afterwards."""
        for job in self.jobs:
            job.release()
            job.mean = None
        self.raw = None

    @property
    def fold_sizes(self) -> list[int]:
        """Held-out images per fold (empty without CV)."""
        return [int(t.size) for t in self.tests]


def mean_for(mean_vector: "np.ndarray | str | None", truth: np.ndarray, rows: np.ndarray, bank) -> np.ndarray | None:
    """The unit mean vector of a study: of the truth ``rows``, of the bank's values, given, or None."""
    if mean_vector is None or (isinstance(mean_vector, str) and mean_vector == "none"):
        return None
    if isinstance(mean_vector, str):
        if mean_vector == "truth":
            return l2_normalise(truth[rows].mean(axis=0, dtype=np.float64)[None])[0].astype(np.float64)
        if mean_vector == "bank":
            if bank is None:
                raise ConfigError("mean vector 'bank' needs a prompt-bank index (--index)")
            return bank.mean_vector().astype(np.float64)
        raise ConfigError(f"mean vector must be 'truth', 'bank', 'none' or a vector, got '{mean_vector}'")
    mu = check_embeddings(np.asarray(mean_vector, np.float32).reshape(1, -1), what="mean vector")[0]
    return l2_normalise(mu[None])[0].astype(np.float64)


def study_fingerprint(data: Aligned, raw: RawStats, rows: np.ndarray, mu: np.ndarray | None, normalise: bool | None) -> str:
    """What a study was made for: ids, run names, its rows, a coarse digest of the runs' content."""
    h = hashlib.sha256()
    h.update(np.round(raw.truth[rows].mean(axis=0), 4).tobytes())
    h.update(np.round(raw.norms[rows].mean(axis=0), 4).tobytes())
    h.update("\n".join(data.ids).encode())
    h.update("\n".join(data.names).encode())
    h.update(np.asarray(rows, np.int64).tobytes())
    h.update(b"none" if mu is None else np.round(mu, 6).tobytes())
    h.update(str(normalise).encode())
    return h.hexdigest()[:16]


def _fold_split(data: Aligned, folds: int, seed: int, group_threshold: float) -> tuple:
    """``(fold_of, groups, [(train, test)...], pair_split)``: folds grouped by prompt similarity
    (bounded groups, near-duplicates together: :mod:`ensemble.cv`); None, None, [], None for 0."""
    if not folds:
        return None, None, [], None
    from ..cv import group_folds, prompt_groups

    groups = prompt_groups(data.truth, group_threshold)
    fold_of = group_folds(groups.labels, folds, seed, pairs=(groups.i, groups.j))
    splits = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]
    return fold_of, groups.labels, splits, groups.split_share(fold_of)


def build_plan(
    data: Aligned,
    *,
    folds: int,
    seed: int,
    group_threshold: float,
    mean_vector: "np.ndarray | str | None",
    bank,
    normalise: bool | None,
    prefix: str,
    trials: int,
) -> CvPlan:
    """Statistics, folds, mean vectors and one :class:`Job` per fold and for the final study."""
    raw = raw_stats(data.stack, data.truth)
    fold_of, groups, splits, pair_split = _fold_split(data, folds, seed, group_threshold)
    named = [(f"{prefix}-fold{f}", train) for f, (train, _) in enumerate(splits)]
    named.append((f"{prefix}-final", np.arange(len(data.ids))))
    mus = [mean_for(mean_vector, data.truth, rows, bank) for _, rows in named]
    has_mean = mus[-1] is not None
    means = mean_stats_many(data.stack, data.truth, mus) if has_mean else [None] * len(mus)
    space = BlendSpace.of(data.names, has_mean, normalise)
    jobs = [
        Job(name, rows, space, trials, mu, m, study_fingerprint(data, raw, rows, mu, normalise))
        for (name, rows), mu, m in zip(named, mus, means)
    ]
    return CvPlan(data, raw, space, jobs, [test for _, test in splits], fold_of, groups, pair_split)
