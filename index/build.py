"""``python -m index.build``: prompt files -> cleaned, deduplicated bank with MiniLM values, CLIP
(or MiniLM) keys, an auto-chosen FAISS index tuned to a recall target, and ``manifest.json``.

Work in progress lives in ``OUT/.build/`` (cleaned text, embedding shards); a killed build resumes
from there, and a finished bank with the same settings (and the same prompt file contents) is
returned without recomputation. One build runs per folder: a second waits for ``OUT/.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from promptblend import atomic, lines
from promptblend.bank import (
    INDEX_FILE,
    KEYS_FILE,
    MANIFEST,
    PROMPTS_ENCODED_FROM,
    PROMPTS_FILE,
    VALUES_FILE,
)
from promptblend.cli import entry_point
from promptblend.device import default_device
from promptblend.digest import file_digest
from promptblend.errors import BankError, ConfigError
from promptblend.executors import BACKENDS, Executor, open_executor
from promptblend.runkey import config_hash
from promptblend.runs import library_versions
from promptblend.timing import Timer
from promptblend.vectors import DIM, check_embeddings, l2_normalise

from .choose import IndexChoice, choose_index
from .embedding import TextModel, embed_in_shards, embed_texts
from .faiss_index import build_index, tune_search, write_index
from .near_dedup import near_duplicates
from .normalise import CleanStats, clean_unique
from .sources import DecodeReport, check_sources, iter_prompts

log = logging.getLogger(__name__)

MIN_PROMPTS = 2
WORK_DIR = ".build"
LOCK_FILE = ".lock"
UNIQUE = "unique.txt"
ALL_VALUES = "values_all.npy"
COPY_ROWS = 262144


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
    strict_utf8: bool = False  # refuse non-UTF-8 text instead of replacing it (not part of the hash)

    def values_model(self) -> TextModel:
        """MiniLM (the scoring model) that embeds values."""
        return TextModel("minilm", backend=self.values_backend, batch_size=self.batch_size)

    def keys_model(self) -> TextModel | None:
        """The CLIP text tower that embeds keys, or None (keys = values)."""
        if not self.keys:
            return None
        return TextModel("clip", self.keys, self.keys_pretrained, batch_size=max(self.batch_size, 64))

    def check(self) -> np.ndarray | None:
        """Refuse bad settings and missing or unreadable inputs before any work; returns the tune queries."""
        if not self.prompts:
            raise ConfigError("no prompt files given")
        if self.dedup_cos is not None and not 0 < self.dedup_cos <= 1:
            raise ConfigError(f"--dedup-cos must be in (0, 1], got {self.dedup_cos}")
        if not 0 < self.recall_target <= 1:
            raise ConfigError(f"--recall-target must be in (0, 1], got {self.recall_target}")
        if self.budget_gb <= 0:
            raise ConfigError(f"--budget-gb must be positive, got {self.budget_gb}")
        if self.shard_size < 1 or self.batch_size < 1:
            raise ConfigError(
                f"--shard-size and --batch-size must be at least 1, got {self.shard_size}, {self.batch_size}"
            )
        check_sources(self.prompts)
        if self.keys:
            embed_texts(self.keys_model(), ["a"])  # an unknown model or a bad weights file fails before any work
        return self.load_tune_queries(None if self.keys else DIM)

    def content_hash(self) -> str:
        """Hash of what changes the bank: settings and the prompt files' bytes (not where or how fast)."""
        d = asdict(self)
        d.pop("strict_utf8")
        d["prompts"] = [[str(Path(p).resolve()), file_digest(p)] for p in self.prompts]
        if self.tune_queries:
            d["tune_queries"] = file_digest(self.tune_queries)
        return config_hash(d)

    def load_tune_queries(self, dim: int | None = None) -> np.ndarray | None:
        """The ``--tune-queries`` rows (unit float32), checked: 2-d, finite, ``dim`` columns (any if None)."""
        if not self.tune_queries:
            return None
        path = Path(self.tune_queries)
        if not path.is_file():
            raise ConfigError(f"--tune-queries file not found: {path}")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic[:2] == b"PK":
            raise ConfigError(f"--tune-queries {path} is an .npz archive; save one array with np.save")
        if magic != b"\x93NUMPY":  # a pickle, text, or nothing: np.load would only blame pickling
            raise ConfigError(f"--tune-queries {path} is not a .npy file (no NumPy header)")
        try:
            q = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # an object array, or a truncated file
            raise ConfigError(f"--tune-queries {path} is not a readable .npy array: {e}") from e
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


def _read_lines(path: Path) -> Iterator[str]:
    """The texts of a line-encoded file (:mod:`promptblend.lines`), streamed."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield lines.decode_line(line.removesuffix("\n"))


def _copy_kept_lines(src: Path, dest: Path, keep: np.ndarray) -> None:
    """Write the lines of ``src`` whose ``keep`` flag is set to ``dest`` atomically (still encoded)."""
    with (atomic.atomic_path(dest, needed=src.stat().st_size) as tmp, open(src, encoding="utf-8", newline="\n") as f,
          open(tmp, "w", encoding="utf-8", newline="\n") as out):
        out.writelines(line for line, k in zip(f, keep) if k)


@contextlib.contextmanager
def _npy_out(path: Path, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """A float32 ``.npy`` memmap published atomically at ``path``. Its size is checked against the free
    space and allocated up front, so a full disk is a ``DiskFullError`` here, never a SIGBUS later."""
    with atomic.atomic_path(path, ".npy", needed=shape[0] * shape[1] * 4) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        with open(tmp, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot preallocate
                    raise
        yield out
        out.flush()


class _Build:
    """The stages of one build of ``cfg`` into ``out``, each timed; run while holding the folder's lock."""

    def __init__(self, cfg: BuildConfig, out: Path, key: str, executor: Executor, progress: bool):
        self.cfg, self.out, self.key = cfg, out, key
        self.executor, self.progress = executor, progress
        self.work = out / WORK_DIR
        self.timer = Timer()

    def run(self, tune_queries: np.ndarray | None) -> dict:
        """Clean, embed values, drop near-duplicates, embed keys, build and tune the index; manifest last."""
        self.prepare()
        stage = self.timer.stage
        with stage("clean"):
            clean = self.clean()
        with stage("values"):
            value_stats = self.embed_values(clean["kept"])
        with stage("near_dedup"):
            kept_n = self.keep_distinct()
        with stage("keys"):
            keys_file, key_stats = self.embed_keys(kept_n)
        keys = np.load(self.out / keys_file, mmap_mode="r")
        with stage("index_build"):
            choice = choose_index(kept_n, keys.shape[1], int(self.cfg.budget_gb * 2**30))
            atomic.ensure_free_space(self.out, choice.bytes, INDEX_FILE)  # before the build, not after it
            index = build_index(keys, choice, seed=self.cfg.seed, progress=self.progress)
        with stage("index_tune"):
            tuning = tune_search(index, choice, keys, target=self.cfg.recall_target, seed=self.cfg.seed + 1,
                                 queries=tune_queries)
            tuning["query_source"] = self.cfg.tune_queries or "mixtures of bank keys"
        write_index(index, self.out / INDEX_FILE, needed=choice.bytes)
        manifest = self.manifest(clean=clean, kept_n=kept_n, keys_file=keys_file, keys_dim=int(keys.shape[1]),
                                 choice=choice, tuning=tuning, embedding={"values": value_stats, "keys": key_stats})
        atomic.write_text(self.out / MANIFEST, json.dumps(manifest, indent=2))
        return manifest

    def prepare(self) -> None:
        """Sweep temp files of killed builds; drop the stage outputs of another build (shards stay valid)."""
        (self.work / "shards").mkdir(parents=True, exist_ok=True)
        for folder in (self.out, self.work, self.work / "shards"):
            atomic.sweep_stale(folder)
        stamp = self.work / "build_hash"
        if not stamp.is_file() or stamp.read_text().strip() != self.key:
            for f in (self.work / "clean.json", self.work / UNIQUE, self.work / ALL_VALUES):
                f.unlink(missing_ok=True)
            atomic.write_text(stamp, self.key)

    def clean(self) -> dict:
        """Stream, normalise and exactly deduplicate all sources into ``work/unique.txt``; counts."""
        done = self.work / "clean.json"
        if done.is_file():
            info = json.loads(done.read_text(encoding="utf-8"))
            if self.cfg.strict_utf8 and info.get("non_utf8_lines"):  # cleaned by an earlier, lenient run
                raise BankError(f"{info['non_utf8_lines']} prompt line(s) are not valid UTF-8 (see the "
                                f"non_utf8_lines of {done}); --strict-utf8 refuses them")
            return info
        stats, undecoded = CleanStats(), DecodeReport(strict=self.cfg.strict_utf8)
        with atomic.atomic_path(self.work / UNIQUE) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            texts = clean_unique(iter_prompts(self.cfg.prompts, undecoded), stats)
            f.writelines(lines.encode_line(text) + "\n" for text in texts)
        info = {**stats.as_dict(), "non_utf8_lines": undecoded.total()}
        info["sources"] = [
            {"path": str(p), **stats.per_source.get(n, {"read": 0, "kept": 0}),
             "non_utf8_lines": undecoded.replaced.get(n, 0)} for n, p in enumerate(self.cfg.prompts)
        ]
        for n, count in undecoded.replaced.items():
            log.warning("%s: %d line(s) held bytes that are not UTF-8, replaced by U+FFFD (first: line %d); "
                        "--strict-utf8 refuses them", self.cfg.prompts[n], count, undecoded.first_line[n])
        if stats.kept < MIN_PROMPTS:
            raise BankError(
                f"the bank has {stats.kept} distinct prompt(s) after cleaning (read {stats.read}, empty {stats.empty}, "
                f"exact duplicates {stats.duplicates}); need at least {MIN_PROMPTS}"
            )
        atomic.write_text(done, json.dumps(info, indent=2))
        return info

    def embed_values(self, count: int) -> dict:
        """MiniLM values of every distinct prompt into ``work/values_all.npy`` (reused when there)."""
        dest = self.work / ALL_VALUES
        if dest.is_file():
            return {"shards_reused": "all"}
        return self._embed_file(self.cfg.values_model(), self.work / UNIQUE, count, dest, "values")

    def keep_distinct(self) -> int:
        """Drop near-duplicates (when asked); write the kept prompts and their values to ``out``."""
        values = np.load(self.work / ALL_VALUES, mmap_mode="r")
        keep = np.ones(len(values), bool)
        if self.cfg.dedup_cos is not None:
            keep = near_duplicates(values, self.cfg.dedup_cos, self.progress)
        kept_n = int(keep.sum())
        if kept_n < MIN_PROMPTS:
            raise BankError(f"only {kept_n} prompt(s) left after near-duplicate removal at cosine {self.cfg.dedup_cos}")
        _copy_kept_lines(self.work / UNIQUE, self.out / PROMPTS_FILE, keep)
        rows = np.flatnonzero(keep)
        with _npy_out(self.out / VALUES_FILE, (kept_n, values.shape[1])) as dst:
            for s in range(0, kept_n, COPY_ROWS):
                dst[s : s + COPY_ROWS] = values[rows[s : s + COPY_ROWS]]
        return kept_n

    def embed_keys(self, count: int) -> tuple[str, dict]:
        """CLIP text keys of the kept prompts into ``out/keys.npy``; without ``--keys`` keys are the values."""
        model = self.cfg.keys_model()
        if model is None:
            (self.out / KEYS_FILE).unlink(missing_ok=True)
            return VALUES_FILE, {}
        return KEYS_FILE, self._embed_file(model, self.out / PROMPTS_FILE, count, self.out / KEYS_FILE, "keys")

    def _embed_file(self, model: TextModel, lines_path: Path, count: int, dest: Path, desc: str) -> dict:
        """Embed the texts of ``lines_path`` into ``dest`` (.npy, memory-mappable) via content-addressed shards."""
        dim = DIM if model.kind == "minilm" else embed_texts(model, ["a"]).shape[1]
        with _npy_out(dest, (count, dim)) as out:
            return embed_in_shards(model, lambda: _read_lines(lines_path), count, out, self.work / "shards",
                                   self.cfg.shard_size, self.executor, desc)

    def manifest(self, *, clean: dict, kept_n: int, keys_file: str, keys_dim: int, choice: IndexChoice,
                 tuning: dict, embedding: dict) -> dict:
        """The bank's ``manifest.json``: sources, counts, models, index, timings and versions."""
        cfg, keys_model = self.cfg, self.cfg.keys_model()
        counts = {**{k: clean[k] for k in ("read", "empty", "exact_duplicates")}, "unique": clean["kept"],
                  "near_duplicates": clean["kept"] - kept_n, "kept": kept_n,
                  "non_utf8_lines": clean.get("non_utf8_lines", 0)}
        return {
            "format": PROMPTS_ENCODED_FROM,
            "build_hash": self.key,
            "created": datetime.now(timezone.utc).isoformat(),
            "sources": clean["sources"],
            "counts": counts,
            "dedup_cos": cfg.dedup_cos,
            "values": {"file": VALUES_FILE, "model": cfg.values_model().ident(), "encode_backend": cfg.values_backend,
                       "dim": DIM},
            "keys": {"file": keys_file, "model": keys_model.ident() if keys_model else None, "dim": keys_dim},
            "index": {"file": INDEX_FILE, "key": choice.key, "estimated_bytes": choice.bytes,
                      "budget_gb": cfg.budget_gb, "search_param": tuning["param"], "search_value": tuning["value"],
                      "recall_target": cfg.recall_target, "recall_at_10": tuning["recall"], "tuning": tuning},
            "embedding": {"backend": self.executor.name, "shard_size": cfg.shard_size, **embedding},
            **self.timer.record(),
            "versions": library_versions(),
        }


def _lock_holder(path: Path) -> str | None:
    """Who holds the lock file ``path`` (the holder's note), or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the probe's lock goes with the close below
        return None
    except BlockingIOError:
        return os.read(fd, 256).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)


@contextlib.contextmanager
def build_lock(out: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``out/.lock``: one builder per bank folder. A second one logs who holds it and waits
    (at most ``timeout`` seconds, then :class:`BankError`; None: as long as it takes)."""
    path = out / LOCK_FILE
    holder = _lock_holder(path)
    if holder is not None:
        limit = "" if timeout is None else f" (at most {timeout:g} s)"
        log.warning("%s is being built by %s; waiting for that build to finish%s", out, holder, limit)
    deadline = None if timeout is None else time.monotonic() + timeout
    while holder is not None and deadline is not None:
        if time.monotonic() >= deadline:
            raise BankError(f"{out} is being built by {holder}; gave up waiting after {timeout:g} s (--lock-timeout)")
        time.sleep(0.2)
        holder = _lock_holder(path)
    with atomic.file_lock(path):
        since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        path.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n", encoding="utf-8")
        yield


def _make_out(out: Path) -> bool:
    """Create the bank folder ``out`` if needed; True when this call created it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, or no permission
        raise ConfigError(f"cannot create --out folder {out}: {e.strerror}") from e
    return created


def _finished(out: Path, key: str, strict_utf8: bool) -> dict | None:
    """The manifest of the bank in ``out`` if it was built with hash ``key``; else None (any other
    bank's manifest is removed: that bank is rebuilt)."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # damaged: rebuilt
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("build_hash") != key:
        path.unlink()
        return None
    if strict_utf8 and manifest.get("counts", {}).get("non_utf8_lines"):
        raise BankError(f"bank {out} was built from text with {manifest['counts']['non_utf8_lines']} non-UTF-8 "
                        f"line(s) replaced (see {MANIFEST} sources); --strict-utf8 refuses it")
    log.info("bank %s is already built with these settings", out)
    return manifest


def build_bank(cfg: BuildConfig, out: str | Path, backend: str = "local", ray_address: str | None = None,
               keep_work: bool = False, progress: bool = True, lock_timeout: float | None = None) -> dict:
    """Build (or resume, or return the finished) bank in ``out``; returns its manifest.

    Bad settings and inputs are refused before ``out`` is touched; a build that fails in a folder
    it created leaves no folder unless embedding shards (resumable work) were written. While
    another process builds in ``out`` this one waits (``lock_timeout`` seconds at most, if given).
    """
    tune_queries = cfg.check()
    key = cfg.content_hash()
    out = Path(out)
    executor = open_executor(backend, ray_address)  # no cluster there: a named error before out is touched
    created = _make_out(out)
    try:
        with executor, build_lock(out, lock_timeout):
            try:
                manifest = _finished(out, key, cfg.strict_utf8)
                if manifest is None:
                    manifest = _Build(cfg, out, key, executor, progress).run(tune_queries)
                if not keep_work:  # also the work a build killed after publishing its manifest left behind
                    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
                return manifest
            except BaseException:
                if created and not any((out / WORK_DIR).rglob("*.npy")):
                    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
                raise
    finally:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a failed first build of bad input leaves nothing


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
    p.add_argument("--backend", choices=BACKENDS, default="local", help="where embedding shards run")
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
    p.add_argument("--strict-utf8", action="store_true",
                   help="refuse prompt text that is not UTF-8 (default: replace bad bytes by U+FFFD and count them)")
    p.add_argument("--lock-timeout", type=float, default=None, metavar="S",
                   help="while another build runs in --out, wait at most S seconds (default: until it ends)")
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
        shard_size=args.shard_size, batch_size=args.batch_size, strict_utf8=args.strict_utf8,
    )
    if args.lock_timeout is not None and args.lock_timeout < 0:
        raise ConfigError(f"--lock-timeout must be at least 0, got {args.lock_timeout}")
    m = build_bank(cfg, args.out, backend=args.backend, ray_address=args.ray_address, keep_work=args.keep_work,
                   lock_timeout=args.lock_timeout)
    c, ix = m["counts"], m["index"]
    repaired = f", non-UTF-8 repaired {c['non_utf8_lines']:,}" if c.get("non_utf8_lines") else ""
    print(f"bank {args.out}: {c['kept']:,} prompts (read {c['read']:,}, empty {c['empty']:,}, "
          f"exact dup {c['exact_duplicates']:,}, near dup {c['near_duplicates']:,}{repaired})")
    search = f"{ix['search_param']}={ix['search_value']}" if ix["search_param"] else "exact"
    print(f"index {ix['key']} ({search}) recall@10 {ix['recall_at_10']:.4f}; "
          f"keys {_model_label(m['keys']['model'])}; total {m['times']['total_s']:.1f} s, "
          f"peak RSS {m['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
