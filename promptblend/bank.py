"""The one prompt-bank reader: values (MiniLM rows to average or snap to), keys (what a query is
matched against), prompt texts, the manifest and the FAISS index of a folder built by ``index.build``.

Writers (``index.build``) and readers (``knn``, ``ensemble`` snapping and mean vector) share the file
names defined here; a bank can also be made from arrays (tests, a folder holding only ``values.npy``).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from promptblend import atomic, lines
from promptblend.errors import BankError, KeyModelMismatchError
from promptblend.vectors import check_embeddings, l2_normalise

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
VALUES_FILE = "values.npy"
KEYS_FILE = "keys.npy"
PROMPTS_FILE = "prompts.txt"
#: Manifest format from which ``prompts.txt`` holds :mod:`promptblend.lines`-encoded texts.
PROMPTS_ENCODED_FROM = 2


class Bank:
    """A prompt bank.

    ``search(queries, k)`` -> (similarities, rows) over the keys (the folder's FAISS index, or an
    exact inner-product index built on first use); ``nearest_values`` does the same over the values
    (for snapping), ``prompts`` holds the texts row-aligned with ``values``.
    """

    def __init__(self, values: np.ndarray, keys: np.ndarray | None = None, prompts: list[str] | None = None,
                 manifest: dict | None = None, index=None, folder: str | Path | None = None):
        if values.ndim != 2 or not len(values):
            raise BankError(f"bank values must be a non-empty 2-d array, got shape {values.shape}")
        self.values = values
        self.keys = values if keys is None else keys
        if len(self.keys) != len(self.values):
            raise BankError(f"bank {folder}: {len(self.values)} values but {len(self.keys)} keys")
        self.manifest = manifest or {}
        self.index = index
        self.folder = Path(folder) if folder is not None else None
        self._prompts = prompts
        self._value_index = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def path(self) -> str | None:
        """The bank folder as a string (None for an in-memory bank)."""
        return None if self.folder is None else str(self.folder)

    @property
    def key_model(self) -> dict | None:
        """``{"kind", "name", "pretrained"}`` of the CLIP tower that embedded keys, or None (MiniLM)."""
        return (self.manifest.get("keys") or {}).get("model")

    def check_key_model(self, name: str, pretrained: str | None) -> None:
        """Raise :class:`KeyModelMismatchError` unless keys were embedded by CLIP ``name``/``pretrained``."""
        km = self.key_model
        if km is None or km.get("name") != name or km.get("pretrained") != pretrained:
            have = "MiniLM values (no CLIP keys)" if km is None else f"{km.get('name')} ({km.get('pretrained')})"
            raise KeyModelMismatchError(
                f"bank {self.folder} keys were embedded by {have}, but the query model is {name} ({pretrained}); "
                f"rebuild the bank with --keys {name}" + (f" --keys-pretrained {pretrained}" if pretrained else "")
            )

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, row ids) of unit ``queries`` against the keys; missing hits are -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.keys.shape[1]:
            raise BankError(f"queries have {q.shape[1]} dims, bank keys {self.keys.shape[1]}")
        if self.index is None:
            self.index = _exact_index(self.keys)
        return self.index.search(q, int(k))

    def nearest_values(self, queries: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Cosine to and row of the nearest bank value for each query row (no hit: -inf, row 0)."""
        if self._value_index is None:
            self._value_index = self if self.key_model is None else _exact_index(self.values)
        sims, rows = [], []
        q = np.ascontiguousarray(l2_normalise(queries))
        for start in range(0, len(q), chunk):
            s, r = self._value_index.search(q[start : start + chunk], 1)
            sims.append(s[:, 0])
            rows.append(r[:, 0])
        sim, row = np.concatenate(sims).astype(np.float64), np.concatenate(rows)
        sim[row < 0] = -np.inf  # no hit: never snapped
        return sim, np.maximum(row, 0)

    def value_rows(self, rows: np.ndarray) -> np.ndarray:
        """Unit values of ``rows`` (float32)."""
        return l2_normalise(np.asarray(self.values[np.asarray(rows)], np.float32))

    def snap(self, emb: np.ndarray, threshold: float) -> np.ndarray:
        """``emb`` with every row whose nearest bank value has cosine >= ``threshold`` replaced by it."""
        sim, rows = self.nearest_values(emb)
        out = np.array(emb, np.float32, copy=True)
        hit = sim >= threshold
        out[hit] = self.value_rows(rows[hit])
        return out

    def mean_vector(self) -> np.ndarray:
        """Unit mean of the bank's values (a prior prompt embedding), in float64."""
        total = np.zeros(self.values.shape[1])
        for start in range(0, len(self.values), 262144):
            total += np.asarray(self.values[start : start + 262144], np.float64).sum(axis=0)
        return total / max(np.linalg.norm(total), 1e-12)

    @property
    def prompts(self) -> list[str]:
        """All prompt texts, row-aligned with values/keys (read on first use)."""
        if self._prompts is None:
            if self.folder is None or not (self.folder / PROMPTS_FILE).is_file():
                raise BankError(f"bank {self.folder} has no {PROMPTS_FILE}")
            texts = _read_prompts(self.folder / PROMPTS_FILE, self.manifest.get("format", PROMPTS_ENCODED_FROM))
            if len(texts) != len(self):
                raise BankError(f"bank {self.folder}: {PROMPTS_FILE} has {len(texts)} lines for {len(self)} rows")
            self._prompts = texts
        return self._prompts


def _read_prompts(path: Path, fmt: int) -> list[str]:
    """The texts of a bank's prompts file: line-encoded (:mod:`promptblend.lines`) from format 2 on."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BankError(f"{path} is not UTF-8 text: {e}") from e
    if fmt >= PROMPTS_ENCODED_FROM:
        return lines.loads(text)
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def _exact_index(vectors: np.ndarray):
    """An exact inner-product FAISS index over unit ``vectors``."""
    import faiss

    v = np.ascontiguousarray(l2_normalise(check_embeddings(np.asarray(vectors), dim=vectors.shape[1], what="bank vectors")))
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    return index


def read_index(path: Path, mmap: bool = False):
    """Load a FAISS index file (memory-mapped if asked)."""
    import faiss

    if not Path(path).is_file():
        raise BankError(f"index file not found: {path}")
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as e:  # faiss reports a truncated or foreign file this way, C++ location first
        reason = re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", " ".join(str(e).split()))
        raise BankError(f"{path} is not a readable FAISS index: {reason[:200]}") from e


def set_search_param(index, name: str | None, value: int | None) -> None:
    """Set ``nprobe`` or ``efSearch`` on ``index`` (through any wrapper); no-op for exact indexes."""
    import faiss

    if name is not None and value is not None:
        faiss.ParameterSpace().set_index_parameter(index, name, int(value))


def _read_manifest(folder: Path) -> dict:
    """A bank's manifest, checked for the entries a reader needs."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BankError(f"bank {folder}: {MANIFEST} is not JSON ({e}); rebuild the bank") from e
    needed = (("values", "file"), ("keys", "file"), ("counts", "kept"), ("index", "key"))
    missing = [f"{part}.{entry}" for part, entry in needed
               if not isinstance(manifest, dict) or not isinstance(manifest.get(part), dict)
               or entry not in manifest[part]]
    if missing:
        raise BankError(f"bank {folder}: {MANIFEST} lacks {', '.join(missing)}; rebuild the bank")
    return manifest


def _open_built(folder: Path) -> Bank:
    manifest = _read_manifest(folder)
    try:
        values = np.load(folder / manifest["values"]["file"], mmap_mode="r", allow_pickle=False)
        keys = np.load(folder / manifest["keys"]["file"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BankError(f"bank {folder} is incomplete: {e}") from e
    if values.ndim != 2 or keys.ndim != 2:
        raise BankError(f"bank {folder}: values {values.shape} and keys {keys.shape} must be 2-d")
    if len(values) != len(keys) or len(values) != manifest["counts"]["kept"]:
        raise BankError(f"bank {folder}: values, keys and manifest counts disagree")
    ix = manifest["index"]
    index = read_index(folder / ix.get("file", INDEX_FILE))
    if index.ntotal != len(keys):
        raise BankError(f"bank {folder}: index holds {index.ntotal} vectors, keys {len(keys)}")
    set_search_param(index, ix.get("search_param"), ix.get("search_value"))
    return Bank(values, keys, manifest=manifest, index=index, folder=folder)


@functools.lru_cache(maxsize=4)
def _load(folder: str, stamp: tuple) -> Bank:
    path = Path(folder)
    if (path / MANIFEST).is_file():
        return _open_built(path)
    if (path / VALUES_FILE).is_file():
        return Bank(atomic.load_npy(path / VALUES_FILE, mmap=True), folder=path)
    raise BankError(f"{path} is not a built bank (no {MANIFEST} or {VALUES_FILE}); build one with python -m index.build")


def manifest_digest(folder: str | os.PathLike) -> str | None:
    """A built bank's identity for cache keys: a digest of its manifest (None when it has none)."""
    import hashlib

    path = Path(folder, MANIFEST)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def load_bank(folder: str | os.PathLike) -> Bank:
    """Open the bank in ``folder`` (once per process while its manifest is unchanged)."""
    path = Path(folder)
    if not path.is_dir():
        raise BankError(f"prompt bank not found: {path}")
    m = path / MANIFEST
    stamp = (m.stat().st_mtime_ns, m.stat().st_size) if m.is_file() else ()
    return _load(str(path.resolve()), stamp)
