"""Snap-to-bank threshold: the cut of nearest-bank similarities that maximises the mean cosine.

The bank itself (values, nearest-value search, ``snap``) is :class:`promptblend.bank.Bank`.
"""

from __future__ import annotations

import numpy as np


def best_threshold(sim: np.ndarray, snapped: np.ndarray, blended: np.ndarray) -> tuple[float | None, float]:
    """The snap threshold that maximises the mean cosine, and the gain it brings.

    ``sim``: cosine of each blended row to its nearest bank value; ``snapped`` / ``blended``: the
    per-image scores with and without snapping. Exact: every cut of the sorted similarities is tried.
    Returns ``(None, 0.0)`` when snapping never helps.
    """
    order = np.argsort(-sim, kind="stable")
    gain = np.cumsum((snapped - blended)[order])
    # only cut where the similarity changes, so ">= threshold" snaps exactly the prefix
    s = sim[order]
    valid = np.r_[s[1:] < s[:-1], True]
    gain = np.where(valid, gain, -np.inf)
    best = int(np.argmax(gain))
    if gain[best] <= 0:
        return None, 0.0
    return float(s[best]), float(gain[best] / len(sim))
