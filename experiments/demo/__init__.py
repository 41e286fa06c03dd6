"""The built-in demo: a learnable offline task, small models trained on it, and the whole loop.

``run_demo(out=...)`` (what ``python -m ensemble.tune`` runs with no arguments) and
``python -m experiments.demo`` generate the task, train the models, run every predictor, tune the
blend and print the leaderboard. Heavy modules load on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_demo": ".pipeline",
    "DemoResult": ".pipeline",
    "DemoSize": ".pipeline",
    "make_demo_data": ".data",
    "DataConfig": ".data",
    "DemoData": ".data",
    "train_demo_clip": ".clip_train",
    "ClipTrainConfig": ".clip_train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
