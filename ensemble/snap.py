"""Snap-to-bank: replace a blended row by its nearest bank prompt's value when they are close enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from promptblend import atomic
from promptblend.errors import ConfigError
from promptblend.vectors import DIM, check_embeddings, l2_normalise


class Bank:
    """Prompt-bank values (unit MiniLM rows, may be memory-mapped) and a nearest-value search.

    ``search(queries, k)`` -> (similarities, rows) may be given (an index over the values, as
    ``index.bank.Bank.search`` is when its keys are the MiniLM values); otherwise an exact FAISS
    inner-product index over the values is built on first use.
    """

    def __init__(self, values: np.ndarray, prompts: list[str] | None = None, path: str | None = None, search=None):
        if values.ndim != 2 or values.shape[1] != DIM or not len(values):
            raise ConfigError(f"bank values must be a non-empty N x {DIM} array, got shape {values.shape}")
        self.values = values
        self.prompts = prompts
        self.path = path
        self._search = search

    def nearest(self, queries: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Cosine to and row of the nearest bank value for each query row."""
        if self._search is None:
            import faiss

            index = faiss.IndexFlatIP(DIM)
            index.add(np.ascontiguousarray(l2_normalise(check_embeddings(np.asarray(self.values), what="bank values"))))
            self._search = index.search
        sims, rows = [], []
        q = np.ascontiguousarray(l2_normalise(queries))
        for start in range(0, len(q), chunk):
            s, r = self._search(q[start : start + chunk], 1)
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
        sim, rows = self.nearest(emb)
        out = np.array(emb, np.float32, copy=True)
        hit = sim >= threshold
        out[hit] = self.value_rows(rows[hit])
        return out

    def mean_vector(self) -> np.ndarray:
        """Unit mean of the bank's values (a prior prompt embedding), in float64."""
        total = np.zeros(DIM)
        for start in range(0, len(self.values), 262144):
            total += np.asarray(self.values[start : start + 262144], np.float64).sum(axis=0)
        return total / max(np.linalg.norm(total), 1e-12)


def load_bank(folder: str | Path) -> Bank:
    """Open a prompt-bank folder built by ``python -m index.build`` (or any folder with ``values.npy``).

    When the bank's keys are its MiniLM values, its own FAISS index does the search.
    """
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        from index.bank import Bank as IndexBank

        ib = IndexBank(folder)
        search = ib.search if ib.key_model is None else None
        return Bank(ib.values, None, str(folder), search)
    values_file = folder / "values.npy"
    if not values_file.is_file():
        raise ConfigError(f"{folder} is not a prompt-bank index: no manifest.json or values.npy")
    return Bank(atomic.load_npy(values_file, mmap=True), None, str(folder))


def best_threshold(sim: np.ndarray, snapped: np.ndarray, blended: np.ndarray) -> tuple[float | None, float]:
    """The snap threshold that maximises the mean cosine, and the gain it brings.

    ``sim``: cosine of each blended row to its nearest bank value; ``snapped`` / ``blended``: the
    per-image scores with and without snapping. Exact: every cut of the sorted similarities is tried.
    Returns ``(None, 0.0)`` when snapping never helps.
    """
    order = np.argsort(-sim, kind="stable")
    gain = np.cumsum((snapped - blended)[order])
    # only cut where the similarity changes, so ">= threshold" snaps exactly the prefix
    s = sim[order]
    valid = np.r_[s[1:] < s[:-1], True]
    gain = np.where(valid, gain, -np.inf)
    best = int(np.argmax(gain))
    if gain[best] <= 0:
        return None, 0.0
    return float(s[best]), float(gain[best] / len(sim))
