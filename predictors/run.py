"""Run a registered predictor over an image set into a cached, resumable run folder.

``python -m predictors.run NAME --images SET --out RUNS [--config FILE|key=value ...] [--backend ray]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from promptblend.cli import entry_point
from promptblend.device import resolve_device
from promptblend.errors import AlignmentError, ConfigError
from promptblend.executors import BACKENDS, Builder, Pool, open_executor, worker_cpus
from promptblend.imagesets import ImageSet, open_image_set
from promptblend.imagesets.batches import BadBatch, Batches, no_collate, row_batches
from promptblend.runkey import keyed_config, run_key
from promptblend.runs import Run, build_run, cached_run

from .base import Prediction, Predictor
from .registry import (
    build_predictor,
    get_predictor_config,
    list_predictors,
    resolve_params,
    resolved_entry,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


def default_workers() -> int:
    """DataLoader workers: one fewer than the CPUs this process may use (a Ray actor: its share), at most 4."""
    return min(4, max(0, worker_cpus() - 1))


# ---------------------------------------------------------------- config parsing


def _convert(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` with the type of the entry's default value."""
    if default is None:  # untyped: JSON when it parses (numbers, null, lists), else the raw string
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None if text.lower() == "none" else text
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected true/false, got {text!r}")
            return low in ("true", "1", "yes")
        if isinstance(default, (int, float)):
            return type(default)(text)
        if isinstance(default, (list, dict)):
            value = json.loads(text)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a JSON {type(default).__name__}")
            return value
        return text
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"config {key}={text!r}: {e}") from e


def parse_config(name: str, items: Iterable[str] = ()) -> dict[str, Any]:
    """Overrides from ``key=value`` strings and JSON files, typed like the entry's defaults.

    A JSON file holds ``{key: value}`` or a whole entry with ``"params"``. Unknown keys raise
    :class:`ConfigError`.
    """
    defaults = get_predictor_config(name).get("params", {})
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" in item:
            key, _, text = item.partition("=")
            key = key.strip()
            if key not in defaults:
                resolve_params(name, {key: None})  # raises the registry's ConfigError
            overrides[key] = _convert(key, text, defaults[key])
        else:
            path = Path(item)
            if not path.is_file():
                raise ConfigError(f"--config {item!r} is neither key=value nor an existing JSON file")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ConfigError(f"config file {path} is not valid JSON: {e}") from e
            data = data.get("params", data) if isinstance(data, dict) else data
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold a JSON object of settings")
            overrides.update(data)
    resolve_params(name, overrides)  # unknown keys -> ConfigError
    return overrides


# ---------------------------------------------------------------- batching


class _Prepare:
    """The predictor's light, picklable preprocess as a batch ``prepare`` (runs in DataLoader workers)."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: Any, key: int) -> Any:
        return self.transform(image)


class BatchStream:
    """Rows ``start:stop`` of an image set's predictions, fed by one DataLoader that runs ahead.

    :meth:`rows` is the ``compute`` callback of :func:`promptblend.runs.build_run`: consecutive
    requests share one DataLoader (workers decode and preprocess while the model predicts); a
    request that skips rows (shards finished before a resume) restarts it where asked.
    """

    def __init__(
        self, predictor: Predictor, image_set: ImageSet, batch_size: int, workers: int, progress: bool = True
    ) -> None:
        from promptblend.progress import progress_bar

        self.predictor, self.image_set = predictor, image_set
        self.batch_size, self.workers = max(1, batch_size), max(0, workers)
        self._iter = None
        self._pos = 0  # first row held in the buffer / next row to come
        self._emb: list[np.ndarray] = []
        self._prompts: list[str] = []
        self._held = 0
        self._bar = progress_bar(total=len(image_set), desc=getattr(predictor, "name", "predict"), unit="img", disable=not progress)

    def _restart(self, start: int) -> None:
        from torch.utils.data import DataLoader

        transform = self.predictor.transform() if self.predictor.reads_pixels else None
        data = Batches(self.image_set, row_batches(start, len(self.image_set), self.batch_size),
                       None if transform is None else _Prepare(transform))
        loader = DataLoader(data, batch_size=None, collate_fn=no_collate, num_workers=self.workers,
                            pin_memory=resolve_device(self.predictor.device).startswith("cuda"),
                            prefetch_factor=4 if self.workers else None)
        self._iter = iter(loader)
        self._pos, self._emb, self._prompts, self._held = start, [], [], 0

    def _pull(self) -> None:
        import torch

        item = next(self._iter)
        if isinstance(item, BadBatch):
            self.close()
            raise item.bad[0].error()
        rows, inputs = item
        with torch.inference_mode():
            pred: Prediction = self.predictor.predict_batch(self.predictor.collate(inputs))
        emb = np.asarray(pred.embeddings, dtype=np.float32)
        if emb.shape[0] != len(rows):
            raise AlignmentError(f"{self.predictor.name}: predict_batch returned {emb.shape[0]} rows for {len(rows)} images")
        self._emb.append(emb)
        if pred.prompts is not None:
            self._prompts.extend(pred.prompts)
        self._held += len(rows)
        self._bar.update(len(rows))

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, list[str] | None]:
        """Predictions for rows ``start:stop`` (called in increasing order)."""
        if self._iter is None or start != self._pos:
            if start > self._bar.n:
                self._bar.update(start - self._bar.n)
            self._restart(start)
        while self._held < stop - start:
            self._pull()
        emb = np.concatenate(self._emb)
        take = stop - start
        out_emb, rest = emb[:take], emb[take:]
        out_prompts = self._prompts[:take] if self.predictor.produces_text else None
        self._emb = [rest] if len(rest) else []
        self._prompts = self._prompts[take:]
        self._held -= take
        self._pos = stop
        return out_emb, out_prompts

    def close(self) -> None:
        """Stop the workers and the progress bar."""
        self._iter = None
        self._bar.close()


def predict_image_set(
    predictor: Predictor,
    image_set: ImageSet,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    progress: bool = True,
) -> Prediction:
    """Predict a whole image set in memory with the batched pipeline (no run folder, no cache)."""
    predictor.ensure_setup()
    predictor.prepare(image_set)
    stream = BatchStream(predictor, image_set, batch_size, default_workers() if workers is None else workers, progress)
    try:
        emb, prompts = stream.rows(0, len(image_set))
    finally:
        stream.close()
    return Prediction(emb, prompts)


# ---------------------------------------------------------------- runs


def run_predictor(
    name: str,
    images: str | Path | ImageSet | list,
    out: str | Path,
    config: dict[str, Any] | None = None,
    *,
    skip_bad: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str | None = None,
    shard_size: int = 256,
    progress: bool = True,
    backend: str = "local",
    ray_address: str | None = None,
) -> Run:
    """Run predictor ``name`` (registry entry, ``config`` overrides) over an image set into ``out``.

    ``images`` is a folder, WebDataset shards (a folder of ``*.tar``, a brace pattern, a list, URLs; see
    :func:`promptblend.imagesets.open_image_set`) or an opened set. The cache key is the name + resolved
    config (+ digests of files it names, see :meth:`Predictor.cache_inputs`) + image-set fingerprint: an
    existing run is returned as is. Otherwise models are built (a missing model raises
    :class:`ModelNotFoundError` before any shard is written), images are decoded and preprocessed in
    DataLoader workers, and each shard of ``shard_size`` rows is written atomically, so a killed run
    resumes. With ``backend="ray"`` the shards are computed by Ray actors that each build the model once
    (see :mod:`promptblend.executors`) and land in the same run format. A corrupt image raises
    :class:`BadImageError` naming it (finished shards stay for the resume) unless ``skip_bad``.
    A resume with another ``shard_size`` recomputes the rows whose shard layout changed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch size and shard size must be at least 1, got {batch_size} and {shard_size}")
    overrides = dict(config or {})
    entry = resolved_entry(name, overrides)
    image_set = open_image_set(images, skip_bad=skip_bad)
    fingerprint = image_set.fingerprint()
    predictor = build_predictor(entry)
    if device is not None:
        predictor.device = device
    key_config = keyed_config(entry["params"], predictor.cache_inputs())
    extra_meta: dict[str, Any] = {"batch_size": batch_size}
    if image_set.skipped:
        extra_meta["skipped"] = [[what, why] for what, why in image_set.skipped]  # (id or shard, reason)
    with contextlib.ExitStack() as stack:
        source = None
        if cached_run(Path(out) / run_key(name, key_config, fingerprint), image_set.ids) is None:  # a damaged one is rebuilt
            executor = stack.enter_context(open_executor(backend, ray_address))  # no cluster: an error, nothing written
            t0 = time.perf_counter()
            pool = stack.enter_context(executor.pool(Builder(RowWorker, (entry, device, image_set, batch_size, workers))))
            extra_meta.update(backend=pool.backend, actors=pool.size, setup_s=round(time.perf_counter() - t0, 3))
            log.info("%s ready in %.1f s on %d %s worker(s)", name, extra_meta["setup_s"], pool.size, pool.backend)
            source = stack.enter_context(PoolRows(pool, len(image_set), shard_size, name, progress))

        def compute(start: int, stop: int) -> tuple[np.ndarray, list[str] | None]:
            return source.rows(start, stop)

        return build_run(
            out, name, key_config, image_set.ids, fingerprint, compute, shard_size=shard_size, extra_meta=extra_meta,
            progress=False, meta_after=source.meta if source is not None else None,
        )


class RowWorker:
    """What each executor worker builds (in this process, or in a Ray actor from plain data): the
    predictor of a resolved registry entry, set up and prepared once, predicting any row range; a range
    that follows the last one continues the same DataLoader."""

    def __init__(self, entry: dict, device: str | None, image_set: ImageSet, batch_size: int,
                 workers: int | None = None) -> None:
        self.predictor = build_predictor(entry)
        if device is not None:
            self.predictor.device = device
        self.predictor.ensure_setup()
        self.predictor.prepare(image_set)
        workers = default_workers() if workers is None else workers
        self.stream = BatchStream(self.predictor, image_set, batch_size, workers, progress=False)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, list[str] | None, str]:
        """Predictions of rows ``start:stop`` (decoded in this worker's own DataLoader), and the device."""
        return (*self.stream.rows(start, stop), resolve_device(self.predictor.device))

    def close(self) -> None:
        """Stop the DataLoader."""
        self.stream.close()


class PoolRows:
    """The ``compute`` callback of :func:`promptblend.runs.build_run` over an executor's pool: on the
    first request every shard from there on is queued; requests then take results in order (a shard
    found done on disk just discards its result). Shows the progress bar."""

    def __init__(self, pool: Pool, n: int, shard_size: int, name: str, progress: bool = True) -> None:
        from promptblend.progress import progress_bar

        self.pool, self.n, self.shard_size = pool, n, shard_size
        self._results: Iterator | None = None
        self._ranges: list[tuple[int, int]] = []
        self._devices: set[str] = set()
        self._bar = progress_bar(total=n, desc=name, unit="img", disable=not progress)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, list[str] | None]:
        """Predictions for rows ``start:stop`` (called in increasing order)."""
        if self._results is None:
            self._ranges = [(s, min(s + self.shard_size, self.n)) for s in range(start, self.n, self.shard_size)]
            self._results = zip(self._ranges, self.pool.map("rows", self._ranges))
            self._bar.update(start)
        for span, (embeddings, prompts, device) in self._results:
            self._devices.add(device)
            if span == (start, stop):
                self._bar.update(stop - start)
                return embeddings, prompts
        raise AlignmentError(f"rows {start}:{stop} were not queued on the workers")

    def meta(self) -> dict:
        """What the run's ``meta.json`` records of the workers: the device(s) they predicted on and the rows
        this process computed (all of them locally; on Ray, those it did while the actors started)."""
        meta: dict[str, Any] = {"device": "+".join(sorted(self._devices))} if self._devices else {}
        meta["rows_on_driver"] = sum(self._ranges[j][1] - self._ranges[j][0] for j in self.pool.on_driver)
        return meta

    def close(self) -> None:
        """Close the progress bar."""
        self._bar.close()

    def __enter__(self) -> PoolRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: run a predictor over an image set."""
    ap = argparse.ArgumentParser(prog="python -m predictors.run", description=__doc__.splitlines()[0])
    ap.add_argument("name", help=f"registered predictor ({', '.join(list_predictors())})")
    ap.add_argument("--images", required=True, nargs="+",
                    help="image set: a folder (id = file stem; or SET with SET/images/ + SET/prompts.csv), "
                         "a .parquet (or a folder of them), or WebDataset shards (a folder of .tar, "
                         "a brace pattern such as 'sets/val-{000000..000031}.tar', tar paths, URLs, pipe:)")
    ap.add_argument("--out", required=True, help="runs folder (one sub-folder per run)")
    ap.add_argument("--config", nargs="+", action="extend", default=[], metavar="FILE|KEY=VALUE",
                    help="overrides of the entry's params: key=value pairs or JSON files")
    ap.add_argument("--skip-bad", action="store_true",
                    help="leave out undecodable images and cut-off shards (counted here, listed in meta.json)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--workers", type=int, default=None, help=f"DataLoader workers (default {default_workers()})")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--backend", choices=BACKENDS, default="local", help="local, or Ray actors (one per GPU/CPU)")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address for --backend ray (default: local)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = parse_config(args.name, args.config)
    t0 = time.perf_counter()
    run = run_predictor(
        args.name, args.images[0] if len(args.images) == 1 else args.images, args.out, overrides,
        skip_bad=args.skip_bad, batch_size=args.batch_size, workers=args.workers, device=args.device,
        progress=not args.quiet, backend=args.backend, ray_address=args.ray_address,
    )
    status = "cache hit" if run.meta.get("cache_hit") else "computed"
    print(f"{run.path} ({len(run)} images, {status} in {time.perf_counter() - t0:.1f} s)")
    skipped = run.meta.get("skipped") or []
    if skipped:
        shown = ", ".join(what for what, _ in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} bad image(s) (listed in meta.json): {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
