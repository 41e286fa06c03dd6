"""The gradient optimum of the blend objective: L-BFGS-B from several starts, inside the search box."""

from __future__ import annotations

import numpy as np

from .objective import BlendObjective


def gradient_optimum(obj: BlendObjective) -> tuple[np.ndarray, float]:
    """Coefficients ``[w.., m]`` in [0, 1] (largest = 1) maximising ``obj``, and the score there.

    The score does not change when all coefficients are scaled, so the optimum is rescaled to put
    its largest coefficient at 1: it then lies in the box the Optuna search explores. Two starts:
    equal weights, and the best single run (plus the mean vector when there is one).
    """
    from scipy.optimize import minimize

    p = obj.p
    hi = 1.0 if obj.has_mean else 0.0
    bounds = [(0.0, 1.0)] * obj.k + [(0.0, hi)]
    single = np.eye(p)[: obj.k]
    first = int(np.argmax([obj(e) for e in single]))
    lead = np.full(p, 0.05)
    lead[first] = 1.0
    lead[obj.k] *= hi
    starts = [np.r_[np.ones(obj.k), hi * 0.5], lead]

    def neg(c: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = obj.value_and_grad(c)
        return -v, -g

    best_c, best_v = None, -np.inf
    for s in starts:
        res = minimize(neg, s, jac=True, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000})
        c = np.clip(res.x, 0.0, None)
        if c.max() <= 0:
            continue
        c = c / c.max()
        v = obj(c)
        if v > best_v:
            best_c, best_v = c, v
    return best_c, float(best_v)
