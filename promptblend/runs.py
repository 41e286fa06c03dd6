"""Runs: cached predictions of one predictor on one image set (DESIGN section 2).

A run folder holds ``embeddings.npy`` (float32, N x 384, row i for ``ids[i]``), ``ids.txt``,
``meta.json`` and optionally ``prompts.txt``. A run being built lives in ``<key>.partial/`` as
atomic shards, so a killed build resumes where it stopped; the finished run appears in one rename.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import atomic, lines
from .cache import load_entry
from .errors import AlignmentError, RunError
from .runkey import config_hash, run_key
from .vectors import DIM, check_embeddings, check_ids

log = logging.getLogger(__name__)

RUN_FILES = ("embeddings.npy", "ids.txt", "meta.json")


@dataclass
class Run:
    """Predictions aligned with ids; ``prompts`` holds generated text for captioning predictors."""

    ids: list[str]
    embeddings: np.ndarray
    meta: dict = field(default_factory=dict)
    prompts: list[str] | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        self.ids = check_ids(self.ids, what=f"run {self.name} ids")
        self.embeddings = check_embeddings(self.embeddings, n=len(self.ids), what=f"run {self.name} embeddings")
        if self.prompts is not None and len(self.prompts) != len(self.ids):
            raise AlignmentError(f"run {self.name} has {len(self.prompts)} prompts for {len(self.ids)} ids")

    @property
    def name(self) -> str:
        """Display name: ``meta['name']``, else the folder name, else the predictor."""
        return str(self.meta.get("name") or (self.path.name if self.path else None) or self.meta.get("predictor", "run"))

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """The row of each of ``ids``, in that order; unknown ids raise :class:`AlignmentError`."""
        index = {k: i for i, k in enumerate(self.ids)}
        missing = [k for k in ids if k not in index]
        if missing:
            raise AlignmentError(f"run {self.name} lacks {len(missing)} ids, e.g. {missing[:3]}")
        return np.fromiter((index[k] for k in ids), dtype=np.int64, count=len(ids))

    def select(self, ids: Sequence[str]) -> "Run":
        """The rows for ``ids`` in that order; unknown ids raise :class:`AlignmentError`."""
        rows = self.rows_of(ids)
        prompts = [self.prompts[r] for r in rows] if self.prompts is not None else None
        return Run(list(ids), self.embeddings[rows], dict(self.meta), prompts, self.path)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape predictions, for ``meta.json``."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "sentence-transformers", "transformers", "open_clip_torch", "faiss-cpu"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_run(path: str | Path, run: Run) -> Path:
    """Write ``run`` to ``path`` atomically (the folder appears complete or not at all)."""
    path = Path(path)
    meta = {"created": datetime.now(timezone.utc).isoformat(), "versions": library_versions(), **run.meta}
    meta.update(n=len(run.ids), dim=int(run.embeddings.shape[1]))
    texts = {"ids.txt": lines.dumps(run.ids), "meta.json": json.dumps(meta, indent=2, default=str)}
    if run.prompts is not None:
        texts["prompts.txt"] = lines.dumps(run.prompts)
    needed = len(run.ids) * run.embeddings.shape[1] * 4 + sum(len(t) * 4 for t in texts.values())
    with atomic.atomic_dir(path, needed=needed) as tmp:
        with open(tmp / "embeddings.npy", "wb") as f:
            atomic.write_npy(f, run.embeddings.astype(np.float32))
        for name, text in texts.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as f:
                f.write(text)
    run.path, run.meta = path, meta
    return path


def load_run(path: str | Path, mmap: bool = False) -> Run:
    """Read a run folder, checking that ids, rows and prompts line up."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder not found: {path}")
    missing = [f for f in RUN_FILES if not (path / f).is_file()]
    if missing:
        raise RunError(f"{path} is not a run: missing {', '.join(missing)}")
    try:
        emb = atomic.load_npy(path / "embeddings.npy", mmap=mmap)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        ids = lines.read_lines(path / "ids.txt")
        prompts = lines.read_lines(path / "prompts.txt") if (path / "prompts.txt").is_file() else None
    except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RunError(f"{path} is corrupt: {e}") from e
    if not isinstance(meta, dict):
        raise RunError(f"{path} is corrupt: meta.json does not hold an object")
    return Run(ids, emb, meta, prompts, path)


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a finished run folder."""
    return all((Path(path) / f).is_file() for f in RUN_FILES)


def list_runs(root: str | Path) -> list[Path]:
    """Finished run folders directly under ``root`` (or ``root`` itself if it is one), sorted."""
    root = Path(root)
    if is_run(root):
        return [root]
    if not root.is_dir():
        raise RunError(f"runs folder not found: {root}")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run(p))


ShardFn = Callable[[int, int], tuple[np.ndarray, list[str] | None]]


def run_name(predictor: str, config: dict) -> str:
    """A run's short display name: the predictor and a 6-character config tag (the start of the config hash in
    its folder name, the full cache key, which ``meta.json`` keeps under ``key``)."""
    return f"{predictor}-{config_hash(config)[:6]}"


def unique_run_name(out_root: Path, name: str, key: str, fingerprint: str) -> str:
    """``name``, unique among the other runs in ``out_root``: the same predictor and config on another image set
    gets the image set's tag (``@`` and the start of its fingerprint), and a clash beyond that the full key."""
    taken = set()
    for folder in list_runs(out_root) if out_root.is_dir() else []:
        if folder.name != key:
            try:
                taken.add(json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("name"))
            except (OSError, ValueError, AttributeError):
                continue
    for candidate in (name, f"{name}@{fingerprint[:6]}"):
        if candidate not in taken:
            return candidate
    return key


def build_run(
    out_root: str | Path,
    predictor: str,
    config: dict,
    ids: Sequence[str],
    fingerprint: str,
    compute: ShardFn,
    shard_size: int = 256,
    extra_meta: dict | None = None,
    progress: bool = True,
    meta_after: Callable[[], dict] | None = None,
) -> Run:
    """Compute (or fetch from cache) the run of ``predictor`` over ``ids``.

    ``compute(start, stop)`` returns the embeddings (and generated prompts, or None) of rows
    ``start:stop``. Each shard is written atomically under ``<key>.partial/``; after a kill, the
    next call recomputes only the missing shards. ``meta_after()``, called once the rows are computed,
    adds to ``meta.json`` what is known only then (the devices that computed them). A finished run with
    the same key is returned as is; one that fails its checks is removed (with a warning) and rebuilt.
    One process builds a key at a time (lock file ``.<key>.lock``); another waits, then reads the cache.
    Temp files of killed writers in ``out_root`` and the partial folder are swept first.
    """
    ids = check_ids(list(ids))
    key = run_key(predictor, config, fingerprint)
    out_root = Path(out_root)
    cached = cached_run(out_root / key, ids)
    if cached is not None:
        return cached
    # a failure removes a runs folder it made and left empty; kept shards are named on the error line
    with atomic.output_folder(out_root, _holds_anything), atomic.file_lock(out_root / f".{key}.lock"):
        cached = cached_run(out_root / key, ids)  # another process may have finished it while we waited
        if cached is not None:
            return cached
        atomic.sweep_stale(out_root)
        partial = out_root / f"{key}.partial"
        try:
            return _compute_run(out_root / key, partial, predictor, ids, compute, shard_size, progress, {
                "name": unique_run_name(out_root, run_name(predictor, config), key, fingerprint),
                "key": key, "predictor": predictor, "config": config, "fingerprint": fingerprint,
                **(extra_meta or {}),
            }, meta_after)
        except BaseException:
            if not any(partial.glob("rows-*.npz")):
                shutil.rmtree(partial, ignore_errors=True)  # nothing to resume: leave no litter
            raise


def _holds_anything(folder: Path) -> bool:
    return any(folder.iterdir())


def cached_run(final: str | Path, ids: Sequence[str]) -> Run | None:
    """The finished run at ``final`` when it passes its checks (readable, ids equal to ``ids``); None when
    absent, and a failing one is removed with a warning (see :func:`promptblend.cache.load_entry`)."""
    ids = list(ids)

    def load(path: Path) -> Run:
        run = load_run(path)
        if run.ids != ids:
            raise AlignmentError(f"its ids differ from the image set's ({len(run.ids)} vs {len(ids)})")
        return run

    final = Path(final)
    run = load_entry(final, load, "run") if final.is_dir() else None  # a file there: atomic_dir refuses it
    if run is None:
        return None
    log.info("cache hit: %s", final)
    run.meta["cache_hit"] = True
    return run


def _compute_run(
    final: Path, partial: Path, predictor: str, ids: list[str], compute: ShardFn, shard_size: int,
    progress: bool, meta: dict, meta_after: Callable[[], dict] | None = None,
) -> Run:
    """Compute the missing shards under ``partial``, then publish the whole run at ``final``."""
    partial.mkdir(parents=True, exist_ok=True)
    atomic.sweep_stale(partial)
    lines.write_lines(partial / "ids.txt", ids)
    t0 = time.perf_counter()
    from .progress import progress_bar

    bar = progress_bar(total=len(ids), desc=predictor, unit="img", disable=not progress)
    embs, prompts = [], []
    computed, computed_s = 0, 0.0  # rows computed here (not resumed) and their seconds
    for start in range(0, len(ids), shard_size):
        stop = min(start + shard_size, len(ids))
        shard = partial / f"rows-{start:09d}-{stop:09d}.npz"
        e, p = _read_shard(shard, stop - start)
        if e is None:
            t_shard = time.perf_counter()
            e, p = compute(start, stop)
            computed_s += time.perf_counter() - t_shard
            computed += stop - start
            e = check_embeddings(e, n=stop - start, what=f"{predictor} rows {start}:{stop}")
            arrays = {"embeddings": e}
            if p is not None:
                arrays["prompts"] = np.asarray([lines.encode_line(x) for x in p], dtype=str)
            with atomic.atomic_path(shard, ".npz", needed=sum(a.nbytes for a in arrays.values())) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
        embs.append(e)
        prompts.append(p)
        bar.update(stop - start)
    bar.close()
    have_prompts = [p is not None for p in prompts]
    if any(have_prompts) and not all(have_prompts):
        raise RunError(f"{predictor} returned prompts for some shards only")
    meta["wall_time_s"] = round(time.perf_counter() - t0, 3)
    if computed:  # inference time per image, measured on the rows this process computed (a resume counts its part)
        meta["seconds_per_image"] = computed_s / computed
    if meta_after is not None:
        meta.update(meta_after())
    run = Run(
        ids,
        np.concatenate(embs) if embs else np.zeros((0, DIM), np.float32),
        meta,
        [x for p in prompts for x in p] if all(have_prompts) and prompts else None,
    )
    save_run(final, run)
    shutil.rmtree(partial, ignore_errors=True)
    return run


def _read_shard(path: Path, rows: int) -> tuple[np.ndarray | None, list[str] | None]:
    """A finished shard's rows, or (None, None) when it is absent or unusable (then recomputed)."""
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            e = z["embeddings"]
            p = [lines.decode_line(x) for x in z["prompts"].tolist()] if "prompts" in z.files else None
    except (OSError, ValueError, KeyError) as err:
        log.warning("recomputing unreadable shard %s: %s", path, err)
        return None, None
    if e.shape[0] != rows or (p is not None and len(p) != rows):
        log.warning("recomputing shard %s: %d rows, expected %d", path, e.shape[0], rows)
        return None, None
    return e, p
