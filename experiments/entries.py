"""Leaderboard entries: cached runs, tuned blends (``best.json`` + ``submission.csv``), submissions.

An :class:`Entry` carries metadata and a loader; embeddings are loaded one entry at a time when
per-image scores are computed (:func:`score_entries`), so 50 runs over 16,000 images never sit in
memory together.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from promptblend.errors import ConfigError, ImageSetError, RunError, TruthError
from promptblend.runkey import config_hash
from promptblend.runs import Run, is_run, load_run

log = logging.getLogger(__name__)

BLEND_FILES = ("best.json", "submission.csv")
VOLATILE_BEST_KEYS = ("created", "wall_s", "wall_time_s", "storage", "studies", "out")
KINDS = ("run", "blend", "submission", "baseline")
BASELINE = "mean-vector"  # the predictor name of the mean-vector baseline
COSINE_CHUNK = 2048

Loader = Callable[[], tuple[list[str], np.ndarray]]


@dataclass
class Entry:
    """One leaderboard contestant: a name, its kind, metadata, and a loader of (ids, embeddings)."""

    name: str
    kind: str
    loader: Loader = field(repr=False)
    meta: dict = field(default_factory=dict)
    source: Path | None = None
    tuning: dict | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"entry kind must be one of {KINDS}, got {self.kind!r}")
        if not self.name:
            raise ConfigError("an entry needs a name")

    def load(self) -> tuple[list[str], np.ndarray]:
        """The entry's image ids and N x 384 embeddings."""
        return self.loader()

    @property
    def predictor(self) -> str:
        """Predictor name (``blend`` for tuned blends, ``external`` for submissions)."""
        return str(self.meta.get("predictor") or self.kind)

    @property
    def config_hash(self) -> str | None:
        """Hash of the predictor config (or of ``best.json`` for a blend)."""
        if self.meta.get("config_hash"):
            return str(self.meta["config_hash"])
        return config_hash(self.meta["config"]) if isinstance(self.meta.get("config"), dict) else None

    @property
    def fingerprint(self) -> str | None:
        """The image-set fingerprint the run was built on (None for imports, whose hash is the file's)."""
        return None if self.predictor == "external" else self.meta.get("fingerprint")

    @property
    def wall_time_s(self) -> float | None:
        """Wall time of the run or tuning, when recorded."""
        t = self.meta.get("wall_time_s")
        return float(t) if t is not None else None

    @property
    def created(self) -> str | None:
        """Creation time (ISO 8601) when recorded."""
        return self.meta.get("created")


def entry_from_run(run: Run | str | Path, name: str | None = None) -> Entry:
    """An entry for a run folder (loaded lazily) or an in-memory :class:`Run`."""
    if isinstance(run, Run):
        r = run
        return Entry(name or r.name, "run", lambda: (r.ids, r.embeddings), dict(r.meta), r.path)
    path = Path(run)
    if not is_run(path):
        raise RunError(f"{path} is not a run folder (needs embeddings.npy, ids.txt, meta.json)")
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}/meta.json is unreadable: {e}") from e

    def load() -> tuple[list[str], np.ndarray]:
        r = load_run(path)
        return r.ids, r.embeddings

    return Entry(name or str(meta.get("name") or path.name), "run", load, meta, path)


def is_blend(path: str | Path) -> bool:
    """Whether ``path`` is a tuned-blend folder (``best.json`` + its submission CSV)."""
    return (Path(path) / "best.json").is_file() and _blend_submission(Path(path)).is_file()


def _blend_submission(folder: Path) -> Path:
    """``submission.csv``, or the file ``best.json`` names under ``submission`` when that exists."""
    try:
        named = json.loads((folder / "best.json").read_text(encoding="utf-8")).get("submission")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str) and named and Path(named).name == named and (folder / named).is_file():
        return folder / named
    return folder / "submission.csv"


def read_best(path: str | Path) -> dict:
    """Read a tuner's ``best.json``; it must be a JSON object."""
    path = Path(path)
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path} is unreadable: {e}") from e
    if not isinstance(best, dict):
        raise RunError(f"{path} must hold a JSON object, got {type(best).__name__}")
    return best


def tuning_summary(best: Mapping) -> dict:
    """In-sample vs out-of-fold scores of a tuned blend and the gap between them (over-fitting)."""
    out: dict = {}
    for key in ("in_sample", "out_of_fold", "gradient_gap"):
        v = best.get(key)
        if isinstance(v, (int, float)):
            out[key] = float(v)
    folds = best.get("fold_scores")
    if isinstance(folds, list) and folds and all(isinstance(f, (int, float)) for f in folds):
        out["fold_scores"] = [float(f) for f in folds]
        out["fold_std"] = float(np.std(folds))
    if "in_sample" in out and "out_of_fold" in out:
        out["overfit"] = out["in_sample"] - out["out_of_fold"]
    return out


def entry_from_blend(path: str | Path, name: str | None = None, runs: Sequence[str | Path] = ()) -> Entry:
    """An entry for a tuned-blend folder written by ``python -m ensemble.tune``: its ``submission.csv``, or
    with ``runs`` (folders) the blend applied to those runs, as ``python -m ensemble.blend`` does."""
    from promptblend.submission import read_submission

    path = Path(path)
    if not (path / "best.json").is_file() or not (runs or is_blend(path)):
        raise RunError(f"{path} is not a tuned blend (needs {' and '.join(BLEND_FILES)})")
    best = read_best(path / "best.json")
    sub = _blend_submission(path)
    load = (lambda: read_submission(sub)) if not runs else _blend_loader(path, runs)
    meta = {
        "predictor": "blend",
        "config_hash": config_hash({k: v for k, v in best.items() if k not in VOLATILE_BEST_KEYS}),
        "wall_time_s": best.get("wall_time_s", best.get("wall_s")),
        "created": best.get("created") or (_mtime(sub) if sub.is_file() else None),
        "weights": best.get("weights"),
    }
    return Entry(name or path.name, "blend", load, meta, path, tuning_summary(best))


def _blend_loader(path: Path, runs: Sequence[str | Path]) -> Loader:
    """(ids, rows) of the tuned blend at ``path`` applied to the runs in ``runs`` (ensemble.blend's matching)."""

    def load() -> tuple[list[str], np.ndarray]:
        from ensemble.align import load_runs
        from ensemble.blend import blend_runs, load_params

        blended = blend_runs(load_params(path), load_runs([str(r) for r in runs]))
        return blended.ids, blended.embeddings

    return load


def mean_vector_entry(vector: np.ndarray, label: str, source: str, like: Entry) -> Entry:
    """The mean-vector baseline (one unit vector for every image ``like`` covers), named ``mean (label)``
    for where the mean came from (``val``: the tune's validation prompts, ``bank``, ``board``: the board's own
    prompts, in-sample); ``source`` says it in full (the command prints it)."""
    from promptblend.vectors import l2_normalise

    unit = l2_normalise(np.asarray(vector, np.float32).reshape(1, -1))

    def load() -> tuple[list[str], np.ndarray]:
        ids, _ = like.load()
        return ids, np.repeat(unit, len(ids), axis=0)

    return Entry(f"mean ({label})", "baseline", load, {"predictor": BASELINE, "mean_source": source})


def baseline_of_blend(path: str | Path, like: Entry) -> Entry | None:
    """The mean-vector baseline of a tuned blend (its ``mean_vector.npy``), or None when it has none."""
    from promptblend import atomic

    path = Path(path)
    best = read_best(path / "best.json")
    file = best.get("mean_vector_file")
    if not isinstance(file, str) or not (path / file).is_file():
        return None
    source = best.get("mean_source") or "the tune's mean vector"
    label = "val" if source.startswith("validation prompts") else "tune"
    return mean_vector_entry(atomic.load_npy(path / file), label, f"{source} ({path})", like)


def entry_from_submission(name: str, csv: str | Path) -> Entry:
    """An entry for an outside Kaggle submission CSV."""
    from promptblend.submission import read_submission

    csv = Path(csv)
    if not csv.is_file():
        raise RunError(f"submission not found: {csv}")
    meta = {"predictor": "external", "created": _mtime(csv)}
    return Entry(name, "submission", lambda: read_submission(csv), meta, csv)


def entry_from_arrays(name: str, ids: Sequence[str], embeddings: np.ndarray, kind: str = "run", meta: dict | None = None) -> Entry:
    """An entry for predictions already in memory."""
    ids = list(ids)
    return Entry(name, kind, lambda: (ids, embeddings), dict(meta or {}))


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()


def find_entries(root: str | Path) -> list[Entry]:
    """Runs and tuned blends in ``root`` (or ``root`` itself when it is one); none -> :class:`RunError`."""
    root = Path(root)
    if is_run(root):
        return [entry_from_run(root)]
    if is_blend(root):
        return [entry_from_blend(root)]
    if not root.is_dir():
        raise RunError(f"runs folder not found: {root}")
    found = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith(".") or p.name.endswith(".partial"):
            continue
        if is_run(p):
            found.append(entry_from_run(p))
        elif is_blend(p):
            found.append(entry_from_blend(p))
    if not found:
        raise RunError(f"{root} holds no runs (embeddings.npy + ids.txt + meta.json) and no tuned blends (best.json + submission.csv)")
    return found


def load_entries(
    runs: Iterable[str | Path] = (),
    blends: Iterable[str | Path] = (),
    submissions: Mapping[str, str | Path] | None = None,
    bank: str | Path | None = None,
) -> list[Entry]:
    """All entries from runs folders, tuned-blend folders and named submission CSVs (names unique).

    A tuned blend given with runs folders is applied to those runs (as ``ensemble.blend`` does); alone, its
    ``submission.csv`` is the entry. The mean-vector baseline is added: the mean of ``bank``'s prompts when
    given, else the first blend's (the validation prompts it was tuned on).
    """
    runs, blends = list(runs), list(blends)
    entries = [e for root in runs for e in find_entries(root)]
    entries += [entry_from_blend(p, runs=runs) for p in blends]
    entries += [entry_from_submission(n, p) for n, p in (submissions or {}).items()]
    if not entries:
        raise RunError("no entries: give a runs folder, a tuned blend or a submission")
    if not any(e.predictor == BASELINE for e in entries):
        base = None
        if bank is not None:
            from promptblend.bank import load_bank

            base = mean_vector_entry(load_bank(bank).mean_vector(), "bank", f"the prompts of bank {bank}", entries[0])
        elif blends:
            base = baseline_of_blend(blends[0], entries[0])
        entries += [base] if base is not None else []
    check_names(entries)
    return entries


def check_names(entries: Sequence[Entry]) -> None:
    """Raise :class:`ConfigError` when two entries share a name."""
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.name in seen:
            raise ConfigError(
                f"two entries are named '{e.name}' ({seen[e.name].source or 'memory'} and {e.source or 'memory'}); "
                "rename one (--submission NAME=CSV names a submission)"
            )
        seen[e.name] = e


@dataclass
class Scored:
    """Per-image scores of every entry on the common image set, in the truth's id order."""

    ids: list[str]
    scores: np.ndarray
    image_set: str
    digests: list[str]
    truth_extra: int = 0


def score_entries(entries: Sequence[Entry], truth: Run, progress: bool = False) -> Scored:
    """Per-image cosine scores (entries x images), each entry loaded, scored and dropped in turn.

    Entries must cover one image set (same ids; same fingerprint when both runs record one), else
    :class:`ImageSetError`; the truth must hold every id, else :class:`TruthError`.
    """
    from promptblend.progress import progress_bar

    if not entries:
        raise RunError("no entries to score")
    check_names(entries)
    truth_index = {k: i for i, k in enumerate(truth.ids)}
    ref: Entry | None = None
    ref_set: set[str] = set()
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for entry in progress_bar(entries, desc="scoring", unit="entry", disable=not progress, leave=False):
        e_ids, emb = entry.load()
        if ref is None:
            ref, ref_set = entry, set(e_ids)
            missing = [i for i in e_ids if i not in truth_index]
            if missing:
                raise TruthError(
                    f"truth {truth.path or truth.name} lacks {len(missing)} of the {len(e_ids)} image ids of "
                    f"'{entry.name}', e.g. {missing[:3]}"
                )
            keep = np.zeros(len(truth.ids), dtype=bool)
            keep[[truth_index[i] for i in e_ids]] = True
            ids = [k for k, m in zip(truth.ids, keep) if m]
            truth_emb = np.ascontiguousarray(truth.embeddings[np.flatnonzero(keep)], dtype=np.float32)
        else:
            _check_same_set(ref, ref_set, entry, e_ids)
        emb = np.asarray(emb)
        if e_ids != ids:
            pos = {k: r for r, k in enumerate(e_ids)}
            emb = emb[np.fromiter((pos[k] for k in ids), dtype=np.int64, count=len(ids))]
        rows.append(_cosine_chunked(emb, truth_emb))
        del emb
    scores = np.vstack(rows)
    h = hashlib.sha256("\n".join(ids).encode())
    h.update(truth_emb.tobytes())
    digests = [hashlib.sha256(r.tobytes()).hexdigest()[:16] for r in scores]
    extra = len(truth.ids) - len(ids)
    if extra:
        log.info("truth has %d ids no entry covers; scoring the %d common images", extra, len(ids))
    return Scored(ids, scores, image_set_label(entries, h.hexdigest()), digests, extra)


def image_set_label(entries: Sequence[Entry], digest: str) -> str:
    """The board's image-set id (16 characters): the start of the runs' image-set fingerprint, as in their folder
    names and run names (``@c8d0fb``), then the digest of ids and truth, so the label matches what a user sees."""
    fingerprint = next((str(e.fingerprint) for e in entries if e.fingerprint), None)
    return f"{fingerprint[:6]}-{digest}"[:16] if fingerprint else digest[:16]


def _cosine_chunked(pred: np.ndarray, truth: np.ndarray, rows: int = COSINE_CHUNK) -> np.ndarray:
    """``cosine_rows`` over blocks of rows: same numbers, ~3x faster at 16,000 rows (cache-sized blocks)."""
    from promptblend.metric import cosine_rows

    if len(pred) != len(truth):
        return cosine_rows(pred, truth)  # raises the metric's own alignment error
    return np.concatenate([cosine_rows(pred[i : i + rows], truth[i : i + rows]) for i in range(0, max(len(pred), 1), rows)])


def _check_same_set(ref: Entry, ref_set: set[str], entry: Entry, ids: list[str]) -> None:
    have = set(ids)
    if have != ref_set:
        missing, extra = sorted(ref_set - have), sorted(have - ref_set)
        raise ImageSetError(
            f"entries cover different image sets: '{entry.name}' lacks {len(missing)} ids of '{ref.name}' "
            f"{missing[:3]} and has {len(extra)} others {extra[:3]}"
        )
    if ref.fingerprint and entry.fingerprint and ref.fingerprint != entry.fingerprint:
        raise ImageSetError(
            f"entries cover different image sets: '{entry.name}' was built on image set {entry.fingerprint}, "
            f"'{ref.name}' on {ref.fingerprint} (same ids, different files)"
        )
