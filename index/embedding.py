"""Bank embedding in content-addressed shards: values with MiniLM (the scoring model), keys with a
CLIP text tower. Shards already on disk are never recomputed (that is how a killed build resumes);
``ray`` runs the missing shards as Ray tasks so a cluster spreads the work."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from promptblend import atomic
from promptblend.errors import ConfigError

log = logging.getLogger(__name__)

EMBED_BACKENDS = ("local", "ray")


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


def _ray_embed(model_dict: dict, texts: list[str]) -> np.ndarray:
    return embed_texts(TextModel(**model_dict), texts)


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def embed_in_shards(
    model: TextModel,
    lines: Callable[[], Iterable[str]],
    count: int,
    out: np.ndarray,
    shard_dir: Path,
    shard_size: int = 4096,
    backend: str = "local",
    ray_address: str | None = None,
    desc: str = "embed",
) -> dict:
    """Fill ``out`` (count x dim, e.g. a memmap) with the embeddings of ``lines()``, shard by shard.

    Lines are streamed; each shard is saved atomically as ``shard_dir/<address>.npy`` before it is
    copied into ``out``, and shards already there are reused. With ``ray`` a bounded number of
    shards run as tasks at once. Returns counts of reused and computed shards.
    """
    from tqdm.auto import tqdm

    if backend not in EMBED_BACKENDS:
        raise ConfigError(f"unknown embedding backend '{backend}'; use one of {', '.join(EMBED_BACKENDS)}")
    shard_dir.mkdir(parents=True, exist_ok=True)
    stats = {"shards_reused": 0, "shards_computed": 0}
    with tqdm(total=count, desc=desc, unit="prompt", smoothing=0.05) as bar:  # closed on errors too
        def store(at: int, emb: np.ndarray, path: Path) -> None:
            atomic.save_npy(path, emb)
            out[at : at + len(emb)] = emb
            stats["shards_computed"] += 1
            bar.update(len(emb))

        pool = _RayPool(model, store, ray_address) if backend == "ray" else None
        start = 0
        for chunk in _chunks(lines(), shard_size):
            if start + len(chunk) > count:
                raise ConfigError(f"{desc}: more than the expected {count} lines")
            path = shard_dir / f"{shard_address(model, chunk)}.npy"
            if path.is_file():
                out[start : start + len(chunk)] = atomic.load_npy(path)
                stats["shards_reused"] += 1
                bar.update(len(chunk))
            elif pool is None:
                store(start, embed_texts(model, chunk), path)
            else:
                pool.submit(start, chunk, path)
            start += len(chunk)
        if pool is not None:
            pool.drain()
    if start != count:
        raise ConfigError(f"{desc}: expected {count} lines, read {start}")
    return stats


class _RayPool:
    """Missing shards as Ray tasks, at most ~2 per cluster CPU in flight; results stored as they finish."""

    def __init__(self, model: TextModel, store: Callable, address: str | None):
        import ray

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.ray, self.store = ray, store
        self.task = ray.remote(num_cpus=1)(_ray_embed)
        self.model = asdict(model)
        self.max_in_flight = max(2, int(ray.available_resources().get("CPU", 2)) * 2)
        self.running: dict = {}

    def submit(self, at: int, chunk: list[str], path: Path) -> None:
        while len(self.running) >= self.max_in_flight:
            self._finish_one()
        self.running[self.task.remote(self.model, chunk)] = (at, path)

    def _finish_one(self) -> None:
        done, _ = self.ray.wait(list(self.running), num_returns=1)
        at, path = self.running.pop(done[0])
        self.store(at, self.ray.get(done[0]), path)

    def drain(self) -> None:
        while self.running:
            self._finish_one()
