"""The search space of a blend: one weight per run, the mean-vector weight, the normalisation switch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class BlendSpace:
    """Names the Optuna parameters of a blend and turns them into coefficients ``[w.., m]`` and back.

    ``names``: the runs, in stack order; ``has_mean``: whether a mean vector takes part;
    ``normalise``: the per-run L2 switch, fixed (True/False) or searched (None).
    """

    names: tuple[str, ...]
    has_mean: bool
    normalise: bool | None = None

    @classmethod
    def of(cls, names: Sequence[str], has_mean: bool, normalise: bool | None = None) -> "BlendSpace":
        """A space over ``names`` (any sequence)."""
        return cls(tuple(names), bool(has_mean), normalise)

    @property
    def norm_options(self) -> tuple[bool, ...]:
        """The normalisation settings a trial may pick."""
        return (True, False) if self.normalise is None else (self.normalise,)

    def suggest(self, trial) -> tuple[np.ndarray, bool]:
        """Sample ``[w.., m]`` in [0, 1] and the normalisation switch from an Optuna trial."""
        c = [trial.suggest_float(f"w[{n}]", 0.0, 1.0) for n in self.names]
        c.append(trial.suggest_float("mean", 0.0, 1.0) if self.has_mean else 0.0)
        norm = trial.suggest_categorical("normalise", [True, False]) if self.normalise is None else self.normalise
        return np.asarray(c), bool(norm)

    def params(self, c: np.ndarray, norm: bool) -> dict:
        """The Optuna params :meth:`suggest` would turn into ``(c, norm)`` (for enqueueing a trial)."""
        out: dict = {f"w[{n}]": float(c[j]) for j, n in enumerate(self.names)}
        if self.has_mean:
            out["mean"] = float(c[len(self.names)])
        if self.normalise is None:
            out["normalise"] = bool(norm)
        return out

    def decode(self, params: dict) -> tuple[np.ndarray, bool]:
        """Inverse of :meth:`params`: ``(c, norm)`` of a trial's params."""
        c = [params[f"w[{n}]"] for n in self.names] + [params.get("mean", 0.0) if self.has_mean else 0.0]
        norm = bool(params["normalise"]) if self.normalise is None else self.normalise
        return np.asarray(c, np.float64), norm

    def weights(self, c: np.ndarray) -> dict[str, float]:
        """Run weights of ``c`` by name, scaled so the largest coefficient is 1."""
        scale = max(float(np.max(c)), 1e-12)
        return dict(zip(self.names, (np.asarray(c[: len(self.names)]) / scale).tolist()))
