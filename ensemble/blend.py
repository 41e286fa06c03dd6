"""The blend: ``normalise(sum_k w_k * normalise(P_k) + m * mean_vector)``, optionally snapped to a bank."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.errors import BlendError, ConfigError
from promptblend.runs import Run
from promptblend.vectors import DIM, l2_normalise

from .align import align

MEAN_FILE = "mean_vector.npy"


@dataclass
class BlendParams:
    """What a tuned blend needs: weights by run name, the switches and the (unit) mean vector.

    ``snap_threshold`` (with ``bank``, an index folder) replaces a blended row by its nearest bank
    prompt's value when their cosine is at least the threshold.
    """

    weights: dict[str, float]
    mean_weight: float = 0.0
    normalise: bool = True
    mean_vector: np.ndarray | None = None
    snap_threshold: float | None = None
    bank: str | None = None

    def coefficients(self, names: Sequence[str]) -> np.ndarray:
        """``[w_1..w_K, m]`` in the order of ``names``."""
        missing = [n for n in names if n not in self.weights]
        if missing:
            raise BlendError(f"the blend has no weight for runs {missing}; it knows {sorted(self.weights)}")
        return np.array([self.weights[n] for n in names] + [self.mean_weight], np.float64)

    def to_json(self) -> dict:
        """The JSON-able part (the mean vector is saved apart, as ``mean_vector.npy``)."""
        return {
            "weights": dict(self.weights),
            "mean_weight": self.mean_weight,
            "normalise": self.normalise,
            "snap_threshold": self.snap_threshold,
            "bank": self.bank,
        }


def blend_stack(stack: np.ndarray, c: np.ndarray, normalise: bool, mean_vector: np.ndarray | None) -> np.ndarray:
    """Unit blended rows (N x 384 float32) of ``stack`` (K x N x 384) with coefficients ``[w.., m]``."""
    k = stack.shape[0]
    out = np.zeros(stack.shape[1:], np.float32)
    for j in range(k):
        if c[j]:
            out += np.float32(c[j]) * (l2_normalise(stack[j]) if normalise else stack[j])
    if mean_vector is not None and c[k]:
        out += np.float32(c[k]) * mean_vector.astype(np.float32)
    return l2_normalise(out)


def apply_blend(params: "BlendParams | object", runs: Sequence[Run], bank: object | None = None) -> np.ndarray:
    """Blend ``runs`` (matched to the weights by name) into unit N x 384 rows.

    Rows follow the ids of the first run in ``runs`` that the blend weights.
    ``params`` is a :class:`BlendParams` or anything with a ``.params`` attribute (a ``TuneResult``).
    Every run the weights name must be given, all on the same ids. Snapping uses ``bank`` (a
    :class:`promptblend.bank.Bank`) or else ``params.bank``; with neither it raises.
    """
    params = getattr(params, "params", params)
    if not isinstance(params, BlendParams):
        raise BlendError(f"apply_blend needs BlendParams or a TuneResult, got {type(params).__name__}")
    by_name = {r.name: r for r in runs}
    missing = [n for n in params.weights if n not in by_name]
    if missing:
        raise BlendError(f"runs {missing} are weighted in the blend but were not given (have {sorted(by_name)})")
    first = next(r.name for r in runs if r.name in params.weights)
    data = align([by_name[first]] + [by_name[n] for n in params.weights if n != first], min_runs=1)
    emb = blend_stack(data.stack, params.coefficients(data.names), params.normalise, params.mean_vector)
    if params.snap_threshold is not None:
        from promptblend.bank import load_bank

        bank = bank if bank is not None else (load_bank(params.bank) if params.bank else None)
        if bank is None:
            raise BlendError("this blend snaps to a prompt bank: pass bank= or keep params.bank pointing at the index")
        emb = bank.snap(emb, params.snap_threshold)
    return emb


def save_params(folder: str | Path, params: BlendParams, extra: dict | None = None) -> Path:
    """Write ``best.json`` (params plus ``extra``) and ``mean_vector.npy`` into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if params.mean_vector is not None:
        atomic.save_npy(folder / MEAN_FILE, params.mean_vector.astype(np.float32))
    doc = {**params.to_json(), **(extra or {}), "mean_vector_file": MEAN_FILE if params.mean_vector is not None else None}
    atomic.write_text(folder / "best.json", json.dumps(doc, indent=2) + "\n")
    return folder / "best.json"


def load_params(path: str | Path) -> BlendParams:
    """Read a ``best.json`` written by :func:`save_params` (or its folder) back into :class:`BlendParams`."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.json"
    if not path.is_file():
        raise ConfigError(f"blend parameters not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        mean = atomic.load_npy(path.parent / doc["mean_vector_file"]) if doc.get("mean_vector_file") else None
        params = BlendParams(
            weights={str(k): float(v) for k, v in doc["weights"].items()},
            mean_weight=float(doc.get("mean_weight", 0.0)),
            normalise=bool(doc.get("normalise", True)),
            mean_vector=mean,
            snap_threshold=doc.get("snap_threshold"),
            bank=doc.get("bank"),
        )
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{path} is not a blend file: {e}") from e
    if mean is not None and mean.shape != (DIM,):
        raise ConfigError(f"{path.parent / MEAN_FILE} must hold a {DIM}-vector, got shape {mean.shape}")
    return params
