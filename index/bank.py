"""Open a built bank folder: manifest, prompts, memory-mapped values/keys and the FAISS index."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from promptblend.errors import BankError, KeyModelMismatchError

from .build import INDEX_FILE, MANIFEST
from .faiss_index import read_index, set_search_param


class Bank:
    """A prompt bank: ``search(queries, k)`` over its keys, ``values`` to average, ``prompt(i)``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise BankError(f"{self.folder} is not a built bank (no {MANIFEST}); build it with python -m index.build")
        self.manifest = json.loads(path.read_text(encoding="utf-8"))
        try:
            self.values = np.load(self.folder / self.manifest["values"]["file"], mmap_mode="r", allow_pickle=False)
            self.keys = np.load(self.folder / self.manifest["keys"]["file"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BankError(f"bank {self.folder} is incomplete: {e}") from e
        if len(self.values) != len(self.keys) or len(self.values) != self.manifest["counts"]["kept"]:
            raise BankError(f"bank {self.folder}: values, keys and manifest counts disagree")
        ix = self.manifest["index"]
        self.index = read_index(self.folder / ix.get("file", INDEX_FILE))
        if self.index.ntotal != len(self.keys):
            raise BankError(f"bank {self.folder}: index holds {self.index.ntotal} vectors, keys {len(self.keys)}")
        set_search_param(self.index, ix.get("search_param"), ix.get("search_value"))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def key_model(self) -> dict | None:
        """``{"kind", "name", "pretrained"}`` of the CLIP tower that embedded keys, or None (MiniLM)."""
        return self.manifest["keys"]["model"]

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
        return self.index.search(q, int(k))

    @functools.cached_property
    def prompts(self) -> list[str]:
        """All prompt texts, row-aligned with values/keys (read on first use)."""
        text = (self.folder / "prompts.txt").read_text(encoding="utf-8")
        lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        if len(lines) != len(self):
            raise BankError(f"bank {self.folder}: prompts.txt has {len(lines)} lines for {len(self)} rows")
        return lines


@functools.lru_cache(maxsize=4)
def load_bank(folder: str) -> Bank:
    """Open (once per process) the bank in ``folder``."""
    return Bank(folder)
