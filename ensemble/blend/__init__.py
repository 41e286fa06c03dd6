"""The blend: ``normalise(sum_k w_k * normalise(P_k) + m * mean_vector)``, optionally snapped to a bank.

A tuned blend (``best.json`` + ``mean_vector.npy``, written by ``ensemble.tune``) is applied to new
runs with :func:`blend_runs` (the API of ``python -m ensemble.blend``): runs are matched to the
weights by run name, else by predictor name and config hash (recorded per weight in ``best.json``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.errors import AlignmentError, BankError, BlendError, ConfigError
from promptblend.runkey import config_hash, content_hash
from promptblend.runs import Run
from promptblend.vectors import DIM, l2_normalise

from ..align import align

log = logging.getLogger(__name__)

MEAN_FILE = "mean_vector.npy"
#: predictors whose run fingerprint digests the predictions, not an image set
CONTENT_FINGERPRINTED = ("external",)

__all__ = [
    "BlendParams", "Blended", "blend_stack", "apply_blend", "blend_runs", "select_runs", "run_source", "bank_digest",
    "open_blend_bank", "blend_to_submission", "save_params", "load_params", "MEAN_FILE", "MissingRunError", "ImageSetMismatchError",
    "RunIdsMismatchError", "BankMissingError", "BankChangedError",
]


class MissingRunError(BlendError):
    """The blend weights a predictor (name + config) that none of the given runs comes from."""


class ImageSetMismatchError(BlendError):
    """The runs to blend were made on different image sets (or not on the set given by ``--images``)."""


class RunIdsMismatchError(AlignmentError):
    """The runs to blend cover different image ids."""


class BankMissingError(BankError):
    """The blend snaps to a prompt bank that is not where ``best.json`` (or ``--index``) says."""


class BankChangedError(BankError):
    """The prompt bank was rebuilt or changed since the blend was tuned (its manifest digest differs)."""


@dataclass
class BlendParams:
    """What a tuned blend needs: weights by run name, the switches and the (unit) mean vector.

    ``snap_threshold`` (with ``bank``, an index folder) replaces a blended row by its nearest bank
    prompt's value when their cosine is at least the threshold; ``bank_digest`` identifies that
    bank's build. ``sources``: per weighted run name, ``{"predictor", "config_hash", "content_hash",
    "image_set"}``
    (see :func:`run_source`), used to match the runs of another image set.
    """

    weights: dict[str, float]
    mean_weight: float = 0.0
    normalise: bool = True
    mean_vector: np.ndarray | None = None
    snap_threshold: float | None = None
    bank: str | None = None
    bank_digest: str | None = None
    sources: dict[str, dict] = field(default_factory=dict)

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
            "bank_digest": self.bank_digest,
            "sources": {k: dict(v) for k, v in self.sources.items()},
        }


@dataclass
class Blended:
    """Blended unit rows for ``ids``, the runs used (in weight order), the runs ignored, and how each
    weight (by name, in the order of ``used``) matched its run."""

    ids: list[str]
    embeddings: np.ndarray
    used: list[Run]
    ignored: list[Run]
    matched: dict[str, str] = field(default_factory=dict)


def run_source(run: Run) -> dict:
    """What a run's predictions come from: predictor name, config hash and image-set fingerprint.

    ``content_hash`` hashes the config with every local path replaced by the digest of its content
    (:func:`promptblend.runkey.content_hash`), so a model folder moved elsewhere (home vs. a
    competition notebook) still matches; ``config_hash`` is the hash of the config as given.
    """
    meta = run.meta
    config = meta.get("config")
    exact = portable = None
    if isinstance(config, dict):
        exact, portable = config_hash(config), content_hash(config)
    return {
        "predictor": str(meta.get("predictor") or run.name),
        "config_hash": exact,
        "content_hash": portable,
        "image_set": meta.get("fingerprint"),
    }


def bank_digest(folder: str | Path) -> str:
    """Content digest of a bank's build: its manifest (or its ``values.npy`` when it has none)."""
    from promptblend.bank import MANIFEST, VALUES_FILE
    from promptblend.digest import file_digest

    folder = Path(folder)
    return file_digest(folder / MANIFEST if (folder / MANIFEST).is_file() else folder / VALUES_FILE)


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


def _params_of(params: "BlendParams | object") -> BlendParams:
    params = getattr(params, "params", params)
    if not isinstance(params, BlendParams):
        raise BlendError(f"a blend needs BlendParams or a TuneResult, got {type(params).__name__}")
    return params


def _same_source(run: Run, want: dict) -> bool:
    """Same predictor and the same config (as given, or with paths replaced by their content digests)."""
    have = run_source(run)
    if have["predictor"] != want.get("predictor"):
        return False
    return any(have[k] is not None and have[k] == want.get(k) for k in ("config_hash", "content_hash"))


def _image_set(run: Run) -> str | None:
    src = run_source(run)
    return None if src["predictor"] in CONTENT_FINGERPRINTED else src["image_set"]


MATCHED_BY_NAME, MATCHED_BY_SOURCE = "run name", "predictor + config"


def _candidates(name: str, params: BlendParams, runs: Sequence[Run], image_set: str | None) -> tuple[list[Run], str]:
    """The given runs that may stand for weight ``name`` and how they matched: the run of that name first
    (several runs may share a predictor and config, e.g. imported submissions), else the runs of the same
    predictor + config. A name match is ambiguous (all candidates returned) when runs of the same source
    come from another image set: ``image_set`` (``--images``) picks one."""
    want = params.sources.get(name, {})
    found = {how: [r for r in runs if match(r) and (image_set is None or _image_set(r) in (image_set, None))]
             for how, match in ((MATCHED_BY_NAME, lambda r: r.name == name),
                                (MATCHED_BY_SOURCE, lambda r: _same_source(r, want)))}
    by_name, by_source = found[MATCHED_BY_NAME], found[MATCHED_BY_SOURCE]
    if not by_name:
        return by_source, MATCHED_BY_SOURCE
    if len({_image_set(r) for r in by_name + by_source} - {None}) > 1:
        named = {id(r) for r in by_name}
        return by_name + [r for r in by_source if id(r) not in named], MATCHED_BY_NAME
    return by_name, MATCHED_BY_NAME


def _describe(name: str, params: BlendParams) -> str:
    src = params.sources.get(name)
    return f"{name} (predictor {src['predictor']}, config {src['config_hash']})" if src and src.get("config_hash") else name


def select_runs(
    params: BlendParams, runs: Sequence[Run], image_set: str | None = None
) -> tuple[dict[str, Run], list[Run], dict[str, str]]:
    """``(used, ignored, matched)``: the run for each non-zero weight (by weight name, in weight order), the
    runs the blend does not use, and how each weight found its run (:data:`MATCHED_BY_NAME` or
    :data:`MATCHED_BY_SOURCE`, see :func:`_candidates`).

    ``image_set``: keep only runs of that image-set fingerprint. Raises :class:`MissingRunError`
    for a weighted predictor no run comes from, :class:`ImageSetMismatchError` when the chosen
    runs come from different image sets (or one predictor has runs of several sets).
    """
    used: dict[str, Run] = {}
    matched: dict[str, str] = {}
    for name, w in params.weights.items():
        if not w:
            continue
        found, matched[name] = _candidates(name, params, runs, image_set)
        if not found:
            where = f" of image set {image_set}" if image_set else ""
            raise MissingRunError(
                f"the blend weights {_describe(name, params)} but no run{where} given comes from it; "
                f"given: {sorted(r.name for r in runs)}"
            )
        if len(found) > 1:
            raise ImageSetMismatchError(
                f"{len(found)} runs match {_describe(name, params)} ({', '.join(r.name for r in found)}): "
                "pass the runs of one image set, or --images to pick them"
            )
        used[name] = found[0]
    sets = {r.name: _image_set(r) for r in used.values() if _image_set(r) is not None}
    if len(set(sets.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sets.items())
        raise ImageSetMismatchError(f"the runs were made on different image sets ({detail})")
    chosen = {id(r) for r in used.values()}
    return used, [r for r in runs if id(r) not in chosen], matched


def _check_ids(used: Sequence[Run]) -> None:
    base = set(used[0].ids)
    for r in used[1:]:
        if set(r.ids) != base:
            missing, extra = sorted(base - set(r.ids)), sorted(set(r.ids) - base)
            raise RunIdsMismatchError(
                f"run {r.name} covers other images than {used[0].name}: {len(missing)} missing {missing[:3]}, "
                f"{len(extra)} extra {extra[:3]}"
            )


def open_blend_bank(params: BlendParams, index: str | Path | None = None):
    """The prompt bank a snapping blend was tuned with (``index`` overrides its folder), checked unchanged."""
    from promptblend.bank import load_bank

    folder = index if index is not None else params.bank
    if folder is None or not Path(folder).is_dir():
        raise BankMissingError(
            f"this blend snaps to the prompt bank {folder or '(none recorded)'}, which is not there: pass --index BANK"
        )
    if params.bank_digest is not None and bank_digest(folder) != params.bank_digest:
        raise BankChangedError(
            f"the prompt bank {folder} was rebuilt or changed since the blend was tuned "
            f"(manifest digest {bank_digest(folder)[:12]}, tuned with {params.bank_digest[:12]}): "
            "tune again with this bank, or use the bank the blend was tuned with"
        )
    return load_bank(folder)


def blend_runs(params: "BlendParams | object", runs: Sequence[Run], bank: object | None = None,
               index: str | Path | None = None, image_set: str | None = None) -> Blended:
    """Blend ``runs`` with a tuned blend (``BlendParams`` or a ``TuneResult``).

    Rows follow the ids of the first used run in ``runs`` order. Snapping uses ``bank`` (a
    :class:`promptblend.bank.Bank`), else the bank at ``index`` or ``params.bank`` (checked by digest).
    """
    params = _params_of(params)
    mean_only = not any(params.weights.values()) and params.mean_weight and params.mean_vector is not None
    # a blend that is the mean vector alone still needs the runs: they say which images to predict
    chosen = replace(params, weights={n: 1.0 for n in params.weights}) if mean_only else params
    used, ignored, matched = select_runs(chosen, runs, image_set)
    if not used:
        raise BlendError(f"the blend gives no run a non-zero weight ({params.weights}): nothing to blend")
    position = {id(r): i for i, r in enumerate(runs)}
    names = sorted(used, key=lambda n: position[id(used[n])])
    runs_in_order = [used[n] for n in names]
    _check_ids(runs_in_order)
    data = align(runs_in_order, min_runs=1)
    coef = np.array([params.weights[n] for n in names] + [params.mean_weight], np.float64)
    emb = blend_stack(data.stack, coef, params.normalise, params.mean_vector)
    if params.snap_threshold is not None:
        bank = bank if bank is not None else open_blend_bank(params, index)
        emb = bank.snap(emb, params.snap_threshold)
    return Blended(data.ids, emb, runs_in_order, ignored, {n: matched[n] for n in names})


def apply_blend(params: "BlendParams | object", runs: Sequence[Run], bank: object | None = None) -> np.ndarray:
    """Blended unit N x 384 rows of ``runs`` (see :func:`blend_runs`)."""
    return blend_runs(params, runs, bank).embeddings


def blend_to_submission(params: "BlendParams | object", runs: Sequence[Run], out: str | Path,
                        images: str | Path | None = None, index: str | Path | None = None, bank: object | None = None) -> Blended:
    """Blend ``runs`` and write the validated submission CSV ``out`` (nothing is written on an error).

    ``images``: the image folder the runs were made on; its runs are picked by fingerprint, and the
    submission must cover exactly its ids, in its order.
    """
    from promptblend.errors import SubmissionError
    from promptblend.submission import write_submission

    image_set = expected = None
    if images is not None:
        from promptblend.imagesets import open_image_set

        found = open_image_set(images)
        image_set, expected = found.fingerprint(), found.ids
    blended = blend_runs(params, runs, bank=bank, index=index, image_set=image_set)
    if expected is not None and expected != blended.ids:
        if set(expected) != set(blended.ids):
            missing, extra = sorted(set(expected) - set(blended.ids)), sorted(set(blended.ids) - set(expected))
            raise SubmissionError(f"the runs cover other images than {images}: {len(missing)} missing {missing[:3]}, "
                                  f"{len(extra)} extra {extra[:3]}")
        row = {k: i for i, k in enumerate(blended.ids)}
        blended.embeddings = blended.embeddings[[row[k] for k in expected]]
        blended.ids = list(expected)
    write_submission(out, blended.ids, blended.embeddings)
    return blended


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
            bank_digest=doc.get("bank_digest"),
            sources={str(k): dict(v) for k, v in (doc.get("sources") or {}).items()},
        )
    except (KeyError, ValueError, TypeError, AttributeError, OSError) as e:
        raise ConfigError(f"{path} is not a blend file: {e}") from e
    if mean is not None and mean.shape != (DIM,):
        raise ConfigError(f"{path.parent / MEAN_FILE} must hold a {DIM}-vector, got shape {mean.shape}")
    return params
