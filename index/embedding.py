"""Bank embedding in content-addressed shards: values with MiniLM (the scoring model), keys with a
CLIP text tower. Shards already on disk are never recomputed (that is how a killed build resumes);
the missing shards run on an executor's workers (:mod:`promptblend.executors`: here, or Ray actors that
each load the model once) so a cluster spreads the work."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from promptblend import atomic
from promptblend.cache import load_entry
from promptblend.errors import ConfigError
from promptblend.executors import Builder, Executor, LocalExecutor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextModel:
    """What embeds a bank's texts: ``kind`` is ``minilm`` (values) or ``clip`` (keys)."""

    kind: str
    name: str | None = None
    pretrained: str | None = None
    backend: str = "onnx"  # MiniLM encode backend (``torch`` or ``onnx``); unused for CLIP
    batch_size: int = 64

    def ident(self) -> dict:
        """Identity recorded in the manifest (what a query must match)."""
        if self.kind == "minilm":
            return {"kind": "minilm", "name": self.name or "all-MiniLM-L6-v2", "pretrained": None}
        return {"kind": "clip", "name": self.name, "pretrained": self.pretrained}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit float32 rows for ``texts`` (what an executor's worker runs)."""
        return embed_texts(self, texts)

    def shard_tag(self) -> str:
        """Part of a shard's address: identity plus the encode backend (results differ by ~1e-7)."""
        return json.dumps({**self.ident(), "backend": self.backend if self.kind == "minilm" else None}, sort_keys=True)


def embed_texts(model: TextModel, texts: Sequence[str]) -> np.ndarray:
    """Unit float32 rows for ``texts`` with ``model`` (loaded once per process)."""
    if model.kind == "minilm":
        from promptblend.text import encode

        return encode(list(texts), model=model.name, batch_size=model.batch_size, show_progress=False,
                      backend=model.backend)
    if model.kind == "clip":
        from promptblend.clip import embed_texts as clip_texts
        from promptblend.clip import load_clip

        return clip_texts(load_clip(model.name, model.pretrained), list(texts), batch_size=model.batch_size)
    raise ConfigError(f"unknown text model kind '{model.kind}'")


def shard_address(model: TextModel, texts: Sequence[str]) -> str:
    """Content address of one shard: hash of the model tag and the exact texts."""
    h = hashlib.sha256(model.shard_tag().encode())
    for t in texts:
        h.update(b"\n")
        h.update(t.encode("utf-8"))
    return h.hexdigest()[:24]


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_shard(path: Path, shape: tuple[int, int]) -> np.ndarray:
    emb = atomic.load_npy(path)
    if emb.shape != shape:
        raise ValueError(f"shape {emb.shape}, expected {shape}")
    return emb


def embed_in_shards(
    model: TextModel,
    lines: Callable[[], Iterable[str]],
    count: int,
    out: np.ndarray,
    shard_dir: Path,
    shard_size: int = 4096,
    executor: Executor | None = None,
    desc: str = "embed",
) -> dict:
    """Fill ``out`` (count x dim, e.g. a memmap) with the embeddings of ``lines()``, shard by shard.

    Lines are streamed; each shard is saved atomically as ``shard_dir/<address>.npy`` before it is
    copied into ``out``, and shards already there are reused. The missing shards run on ``executor``'s
    workers (default: this process), a bounded number at once. Returns counts of reused and computed shards
    and of those this process computed (all locally; on Ray, those done while the actors started).
    """
    from promptblend.progress import progress_bar

    shard_dir.mkdir(parents=True, exist_ok=True)
    stats = {"shards_reused": 0, "shards_computed": 0, "shards_on_driver": 0}
    todo: list[tuple[int, Path]] = []  # (first row, shard file) of each job, in job order
    read = [0]

    def jobs() -> Iterator[tuple[list[str]]]:
        """The missing shards as jobs (cached ones copied on the way), read as the workers need them."""
        for chunk in _chunks(lines(), shard_size):
            start = read[0]
            if start + len(chunk) > count:
                raise ConfigError(f"{desc}: more than the expected {count} lines")
            path = shard_dir / f"{shard_address(model, chunk)}.npy"
            cached = load_entry(path, functools.partial(_load_shard, shape=(len(chunk), out.shape[1])), "bank shard")
            read[0] += len(chunk)
            if cached is not None:
                out[start : start + len(chunk)] = cached
                stats["shards_reused"] += 1
                bar.update(len(chunk))
            else:
                todo.append((start, path))
                yield (chunk,)

    with progress_bar(total=count, desc=desc, unit="prompt", smoothing=0.05) as bar:  # closed on errors too
        with (executor or LocalExecutor()).pool(Builder(TextModel, kwargs=asdict(model))) as pool:
            for k, emb in enumerate(pool.map("embed", jobs())):
                at, path = todo[k]
                atomic.save_npy(path, emb)
                out[at : at + len(emb)] = emb
                stats["shards_computed"] += 1
                bar.update(len(emb))
            stats["shards_on_driver"] = len(pool.on_driver)
    if read[0] != count:
        raise ConfigError(f"{desc}: expected {count} lines, read {read[0]}")
    return stats
