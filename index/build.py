"""``python -m index.build``: prompt files -> cleaned, deduplicated bank with MiniLM values, CLIP
(or MiniLM) keys, an auto-chosen FAISS index tuned to a recall target, and ``manifest.json``.

Work in progress lives in ``OUT/.build/`` (cleaned text, embedding shards); a killed build resumes
from there, and a finished bank with the same settings is returned without recomputation.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from promptblend import atomic
from promptblend.bank import INDEX_FILE, KEYS_FILE, MANIFEST, PROMPTS_FILE, VALUES_FILE
from promptblend.cli import entry_point
from promptblend.device import default_device
from promptblend.errors import BankError, ConfigError
from promptblend.runs import config_hash, library_versions
from promptblend.vectors import DIM, check_embeddings, l2_normalise

from .choose import choose_index
from .embedding import EMBED_BACKENDS, TextModel, embed_in_shards
from .faiss_index import build_index, tune_search, write_index
from .near_dedup import near_duplicates
from .normalise import CleanStats, clean_unique
from .sources import iter_prompts

log = logging.getLogger(__name__)

MIN_PROMPTS = 2


@dataclass
class BuildConfig:
    """Everything that decides a bank's content (its hash names the build)."""

    prompts: list[str]
    budget_gb: float = 2.0
    keys: str | None = None
    keys_pretrained: str | None = None
    dedup_cos: float | None = None
    recall_target: float = 0.95
    values_backend: str = "onnx"
    tune_queries: str | None = None
    shard_size: int = 4096
    batch_size: int = 64
    seed: int = 0

    def values_model(self) -> TextModel:
        """MiniLM (the scoring model) that embeds values."""
        return TextModel("minilm", backend=self.values_backend, batch_size=self.batch_size)

    def keys_model(self) -> TextModel | None:
        """The CLIP text tower that embeds keys, or None (keys = values)."""
        if not self.keys:
            return None
        return TextModel("clip", self.keys, self.keys_pretrained, batch_size=max(self.batch_size, 64))

    def content_hash(self) -> str:
        """Hash of the settings that change the bank (not of where or how fast it is built)."""
        d = asdict(self)
        d["prompts"] = [str(Path(p).resolve()) for p in self.prompts]
        if self.tune_queries:
            d["tune_queries"] = hashlib.sha256(Path(self.tune_queries).read_bytes()).hexdigest()
        return config_hash(d)

    def load_tune_queries(self, dim: int | None = None) -> np.ndarray | None:
        """The ``--tune-queries`` rows (unit float32), checked: 2-d, finite, ``dim`` columns (any if None)."""
        if not self.tune_queries:
            return None
        path = Path(self.tune_queries)
        if not path.is_file():
            raise ConfigError(f"--tune-queries file not found: {path}")
        q = np.load(path, allow_pickle=False)
        q = check_embeddings(q, dim=q.shape[-1] if dim is None and q.ndim else dim,
                             what=f"--tune-queries {path.name}")
        if len(q) < 10:
            raise ConfigError(f"--tune-queries {path.name} has {len(q)} rows; recall needs at least 10")
        return l2_normalise(q)


def resolve_values_backend(name: str) -> str:
    """``auto`` -> ``torch`` when CUDA is available (sentence-transformers on the GPU), else ``onnx``."""
    if name != "auto":
        return name
    return "torch" if default_device() == "cuda" else "onnx"


def _peak_rss_mb() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(ru / 1024, 1)


def _read_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n")


def _clean(cfg: BuildConfig, work: Path) -> dict:
    """Stage 1: stream, normalise and exactly deduplicate all sources into ``work/unique.txt``."""
    done = work / "clean.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    stats = CleanStats()
    with atomic.atomic_path(work / "unique.txt") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for text in clean_unique(iter_prompts(cfg.prompts), stats):
            f.write(text + "\n")
    info = stats.as_dict()
    info["sources"] = [
        {"path": str(p), **stats.per_source.get(n, {"read": 0, "kept": 0})} for n, p in enumerate(cfg.prompts)
    ]
    if stats.kept < MIN_PROMPTS:
        raise BankError(
            f"the bank has {stats.kept} distinct prompt(s) after cleaning (read {stats.read}, empty {stats.empty}, "
            f"exact duplicates {stats.duplicates}); need at least {MIN_PROMPTS}"
        )
    atomic.write_text(done, json.dumps(info, indent=2))
    return info


def _embed_file(model: TextModel, lines_path: Path, count: int, dest: Path, work: Path, cfg: BuildConfig,
                backend: str, ray_address: str | None, desc: str) -> dict:
    """Embed the lines of ``lines_path`` into ``dest`` (.npy, memory-mappable) via shards."""
    probe_dim = DIM if model.kind == "minilm" else None
    if probe_dim is None:
        from .embedding import embed_texts

        probe_dim = embed_texts(model, ["a"]).shape[1]
    with atomic.atomic_path(dest, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, probe_dim))
        stats = embed_in_shards(model, lambda: _read_lines(lines_path), count, out, work / "shards",
                                cfg.shard_size, backend, ray_address, desc)
        out.flush()
        del out
    return stats


def build_bank(cfg: BuildConfig, out: str | Path, backend: str = "local", ray_address: str | None = None,
               keep_work: bool = False, progress: bool = True) -> dict:
    """Build (or resume, or return the finished) bank in ``out``; returns its manifest."""
    if not cfg.prompts:
        raise ConfigError("no prompt files given")
    if cfg.dedup_cos is not None and not 0 < cfg.dedup_cos <= 1:
        raise ConfigError(f"--dedup-cos must be in (0, 1], got {cfg.dedup_cos}")
    if cfg.budget_gb <= 0:
        raise ConfigError(f"--budget-gb must be positive, got {cfg.budget_gb}")
    tune_queries = cfg.load_tune_queries(None if cfg.keys else DIM)  # a bad file fails before any embedding
    out = Path(out)
    manifest_path = out / MANIFEST
    key = cfg.content_hash()
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("build_hash") == key:
            log.info("bank %s is already built with these settings", out)
            return manifest
        manifest_path.unlink()  # a different bank: the rest is rebuilt below
    work = out / ".build"
    work.mkdir(parents=True, exist_ok=True)
    for stale in itertools.chain(work.glob(".*.tmp*"), (work / "shards").glob(".*.tmp*"), out.glob(".*.tmp*")):
        stale.unlink()  # temp files of a killed build
    stamp = work / "build_hash"
    if not stamp.is_file() or stamp.read_text().strip() != key:
        for f in (work / "clean.json", work / "unique.txt", work / "values_all.npy"):
            f.unlink(missing_ok=True)  # another build's stages; content-addressed shards stay valid
        atomic.write_text(stamp, key)
    times: dict[str, float] = {}
    t0 = t = time.perf_counter()

    clean = _clean(cfg, work)
    times["clean_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    values_model = cfg.values_model()
    all_values = work / "values_all.npy"
    if not all_values.is_file():
        shard_stats = _embed_file(values_model, work / "unique.txt", clean["kept"], all_values, work, cfg,
                                  backend, ray_address, "values")
    else:
        shard_stats = {"shards_reused": "all"}
    times["values_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    values = np.load(all_values, mmap_mode="r")
    keep = np.ones(len(values), bool)
    if cfg.dedup_cos is not None:
        keep = near_duplicates(values, cfg.dedup_cos, progress)
    kept_n = int(keep.sum())
    if kept_n < MIN_PROMPTS:
        raise BankError(f"only {kept_n} prompt(s) left after near-duplicate removal at cosine {cfg.dedup_cos}")
    with atomic.atomic_path(out / PROMPTS_FILE) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for text, k in zip(_read_lines(work / "unique.txt"), keep):
            if k:
                f.write(text + "\n")
    with atomic.atomic_path(out / VALUES_FILE, ".npy") as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(kept_n, values.shape[1]))
        rows = np.flatnonzero(keep)
        for s in range(0, kept_n, 262144):
            dst[s : s + 262144] = values[rows[s : s + 262144]]
        dst.flush()
        del dst
    del values
    times["near_dedup_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    keys_model = cfg.keys_model()
    if keys_model is not None:
        key_stats = _embed_file(keys_model, out / PROMPTS_FILE, kept_n, out / KEYS_FILE, work, cfg,
                                backend, ray_address, "keys")
        keys_file = KEYS_FILE
    else:
        (out / KEYS_FILE).unlink(missing_ok=True)
        key_stats, keys_file = {}, VALUES_FILE
    times["keys_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    keys = np.load(out / keys_file, mmap_mode="r")
    choice = choose_index(kept_n, keys.shape[1], int(cfg.budget_gb * 2**30))
    index = build_index(keys, choice, seed=cfg.seed, progress=progress)
    times["index_build_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    tuning = tune_search(index, choice, keys, target=cfg.recall_target, seed=cfg.seed + 1, queries=tune_queries)
    tuning["query_source"] = cfg.tune_queries or "mixtures of bank keys"
    times["index_tune_s"] = round(time.perf_counter() - t, 2)
    write_index(index, out / INDEX_FILE)
    times["total_s"] = round(time.perf_counter() - t0, 2)

    manifest = {
        "format": 1,
        "build_hash": key,
        "created": datetime.now(timezone.utc).isoformat(),
        "sources": clean["sources"],
        "counts": {**{k: clean[k] for k in ("read", "empty", "exact_duplicates")}, "unique": clean["kept"],
                   "near_duplicates": clean["kept"] - kept_n, "kept": kept_n},
        "dedup_cos": cfg.dedup_cos,
        "values": {"file": VALUES_FILE, "model": values_model.ident(), "encode_backend": cfg.values_backend,
                   "dim": DIM},
        "keys": {"file": keys_file, "model": keys_model.ident() if keys_model else None, "dim": int(keys.shape[1])},
        "index": {"file": INDEX_FILE, "key": choice.key, "estimated_bytes": choice.bytes,
                  "budget_gb": cfg.budget_gb, "search_param": tuning["param"], "search_value": tuning["value"],
                  "recall_target": cfg.recall_target, "recall_at_10": tuning["recall"], "tuning": tuning},
        "embedding": {"backend": backend, "shard_size": cfg.shard_size, "values": shard_stats, "keys": key_stats},
        "times": times,
        "peak_rss_mb": _peak_rss_mb(),
        "versions": library_versions(),
    }
    del keys, index
    atomic.write_text(manifest_path, json.dumps(manifest, indent=2))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _model_label(model: dict | None) -> str:
    return "= MiniLM values" if model is None else f"{model['name']} ({model['pretrained'] or 'random init'})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", nargs="+", required=True, metavar="FILE",
                   help="prompt files: .txt, .txt.gz, .csv (prompt column), .parquet, .jsonl")
    p.add_argument("--out", required=True, help="bank folder to write (resumed if a build was interrupted)")
    p.add_argument("--budget-gb", type=float, default=2.0, help="memory budget of the FAISS index (default 2)")
    p.add_argument("--keys", default=None, metavar="MODEL",
                   help="open_clip model for keys (e.g. ViT-H-14, pb-tiny-clip); default: keys = MiniLM values")
    p.add_argument("--keys-pretrained", default=None, metavar="TAG|PATH",
                   help="open_clip pretrained tag or local weights file of --keys")
    p.add_argument("--dedup-cos", type=float, default=None, metavar="T",
                   help="also drop near-duplicates with cosine >= T (top solutions used 0.8-0.95)")
    p.add_argument("--backend", choices=EMBED_BACKENDS, default="local", help="where embedding shards run")
    p.add_argument("--ray-address", default=None, help="Ray cluster address for --backend ray (default: local)")
    p.add_argument("--values-backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="MiniLM encode backend for values: onnx (CPU fp32 export, same vectors to ~1e-7), "
                        "torch (sentence-transformers, on CUDA when there is one); auto: torch on a GPU, else onnx")
    p.add_argument("--recall-target", type=float, default=0.95, help="recall@10 the search parameter is tuned to")
    p.add_argument("--tune-queries", default=None, metavar="NPY",
                   help="real query vectors (N x key dim .npy, e.g. CLIP image embeddings) to tune the search "
                        "parameter on, instead of mixtures of bank keys")
    p.add_argument("--shard-size", type=int, default=4096, help="prompts per embedding shard")
    p.add_argument("--batch-size", type=int, default=64, help="encode batch size")
    p.add_argument("--keep-work", action="store_true", help="keep OUT/.build (shards) after success")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = _parser().parse_args(argv)
    cfg = BuildConfig(
        prompts=args.prompts, budget_gb=args.budget_gb, keys=args.keys, keys_pretrained=args.keys_pretrained,
        dedup_cos=args.dedup_cos, recall_target=args.recall_target,
        values_backend=resolve_values_backend(args.values_backend), tune_queries=args.tune_queries,
        shard_size=args.shard_size, batch_size=args.batch_size,
    )
    m = build_bank(cfg, args.out, backend=args.backend, ray_address=args.ray_address, keep_work=args.keep_work)
    c, ix = m["counts"], m["index"]
    print(f"bank {args.out}: {c['kept']:,} prompts (read {c['read']:,}, empty {c['empty']:,}, "
          f"exact dup {c['exact_duplicates']:,}, near dup {c['near_duplicates']:,})")
    search = f"{ix['search_param']}={ix['search_value']}" if ix["search_param"] else "exact"
    print(f"index {ix['key']} ({search}) recall@10 {ix['recall_at_10']:.4f}; "
          f"keys {_model_label(m['keys']['model'])}; total {m['times']['total_s']:.1f} s, "
          f"peak RSS {m['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
