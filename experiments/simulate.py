"""Public/private leaderboard simulation: matrix work over per-image scores computed once.

Each entry's per-image cosine scores form a row of ``X`` (entries x images). A board score is a
weighted mean of a row, so a chunk of splits is one matrix product: ``W @ X.T`` where each row of
``W`` is a split's public indicator (random splits) or a bootstrap count vector (fixed split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from promptblend.errors import ConfigError

PUBLIC_FRACTION = 0.2
CHUNK = 128


def n_public_of(n: int, fraction: float) -> int:
    """Number of public images for ``n`` images and a public ``fraction`` (both boards non-empty)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"public fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ConfigError(f"a public/private split needs at least 2 images, got {n}")
    return min(max(int(round(fraction * n)), 1), n - 1)


def public_masks(n: int, n_public: int, splits: int, seed: int, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Random splits as boolean chunks (<= ``chunk`` x ``n``), exactly ``n_public`` True per row.

    The same ``seed`` gives the same splits, so tests and callers can recompute them directly.
    """
    rng = np.random.default_rng([seed, 0])
    for start in range(0, splits, chunk):
        c = min(chunk, splits - start)
        keys = rng.random((c, n), dtype=np.float32)
        idx = np.argpartition(keys, n_public - 1, axis=1)[:, :n_public]
        mask = np.zeros((c, n), dtype=bool)
        np.put_along_axis(mask, idx, True, axis=1)
        yield mask


def bootstrap_counts(n: int, pool: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` x ``n`` float64 counts of ``len(pool)`` draws with replacement from ``pool`` (row-wise)."""
    draws = pool[rng.integers(0, len(pool), (size, len(pool)))]
    draws += (np.arange(size, dtype=np.int64) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry per row (1 = highest score); tied entries share the best rank of their group
    (competition ranking: 1, 1, 3), whatever order they are listed in."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    first = np.ones(ordered.shape, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    place = np.where(first, np.arange(1, scores.shape[1] + 1)[None, :], 0)
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.maximum.accumulate(place, axis=1), axis=1)
    return out


def first_shares(ranks_: np.ndarray) -> np.ndarray:
    """Each entry's share of first place per row: 1/m for each of m entries tied at rank 1."""
    top = ranks_ == 1
    return top / top.sum(axis=1, keepdims=True)


@dataclass
class Comparison:
    """Paired comparison of entries ``a`` and ``b`` (difference = a - b)."""

    a: str
    b: str
    diff: float
    ci: tuple[float, float]
    p_a_wins_private: float
    p_a_wins_public: float
    private_diff_range: tuple[float, float]

    def as_dict(self) -> dict:
        """JSON-able view."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Simulation:
    """Board scores over ``B`` simulated splits for ``E`` entries, plus bootstrap resamples.

    ``public``/``private``: (B, E) board scores; ``boot``: (B, E) scores of the whole set resampled
    with replacement (the same resamples for every entry, so differences are paired).
    ``fixed_split``: the boards are one given split, resampled by bootstrap within each board.
    """

    names: list[str]
    full: np.ndarray
    public: np.ndarray
    private: np.ndarray
    boot: np.ndarray
    n_public: int
    n_private: int
    fixed_split: bool
    seed: int
    level: float = 0.95

    @property
    def splits(self) -> int:
        """Number of simulated splits (or bootstrap resamples of a fixed split)."""
        return self.public.shape[0]

    def _q(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = (1.0 - self.level) / 2
        return np.quantile(x, a, axis=0), np.quantile(x, 1 - a, axis=0)

    def ci(self) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of each entry's whole-set score."""
        return self._q(self.boot)

    def board_range(self, board: str) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` range of each entry's score on ``board`` ('public' or 'private')."""
        return self._q(self._board(board))

    def _board(self, board: str) -> np.ndarray:
        if board not in ("public", "private"):
            raise ConfigError(f"board must be 'public' or 'private', got {board!r}")
        return self.public if board == "public" else self.private

    def ranks(self, board: str) -> np.ndarray:
        """(B, E) rank of each entry per split on ``board`` (1 = best)."""
        cache = self.__dict__.setdefault("_ranks", {})
        if board not in cache:
            cache[board] = ranks(self._board(board))
        return cache[board]

    def rank_distribution(self, board: str) -> np.ndarray:
        """(E, E) fraction of splits where entry e (row) holds rank r+1 (column); m entries tied at rank r
        share ranks r..r+m-1 equally, so rows and columns each sum to 1 and column 0 is :meth:`p_first`."""
        r = self.ranks(board)
        b, e = r.shape
        flat = (np.arange(b)[:, None] * (e + 1) + r).ravel()
        size = np.bincount(flat, minlength=b * (e + 1))[flat].reshape(b, e)
        entry = np.broadcast_to(np.arange(e)[None, :], (b, e))
        dist = np.zeros(e * e)
        for k in range(int(size.max())):
            held = k < size
            np.add.at(dist, entry[held] * e + (r[held] - 1 + k), 1.0 / size[held])
        return dist.reshape(e, e) / b

    def p_first(self, board: str) -> np.ndarray:
        """P(rank 1) of each entry on ``board``; m entries tied first share that split's 1 (sums to 1)."""
        return first_shares(self.ranks(board)).mean(axis=0)

    def rank_shift(self) -> np.ndarray:
        """Expected private rank minus public rank per entry (positive = drops on the private board)."""
        return (self.ranks("private") - self.ranks("public")).mean(axis=0)

    def shakeup(self) -> np.ndarray:
        """Expected |private rank - public rank| per entry."""
        return np.abs(self.ranks("private") - self.ranks("public")).mean(axis=0)

    def p_leader_holds(self) -> float:
        """Probability that the public board's leader also wins the private board (a tie for first place on
        a board counts as each tied entry leading with an equal share)."""
        return float((first_shares(self.ranks("public")) * first_shares(self.ranks("private"))).sum(axis=1).mean())

    def index(self, name: str) -> int:
        """Position of entry ``name``: exact name, else a unique substring."""
        if name in self.names:
            return self.names.index(name)
        hits = [i for i, n in enumerate(self.names) if name in n]
        if len(hits) != 1:
            what = "matches several entries" if hits else "matches no entry"
            raise ConfigError(f"'{name}' {what}; entries: {', '.join(self.names)}")
        return hits[0]

    def compare(self, a: str, b: str) -> Comparison:
        """P(a beats b) on each board and the paired-bootstrap interval of the score difference."""
        i, j = self.index(a), self.index(b)
        if i == j:
            raise ConfigError(f"compare needs two different entries, got '{a}' twice")
        d_boot = self.boot[:, i] - self.boot[:, j]
        d_priv = self.private[:, i] - self.private[:, j]
        d_pub = self.public[:, i] - self.public[:, j]
        lo, hi = self._q(d_boot[:, None])
        plo, phi = self._q(d_priv[:, None])
        wins = lambda d: float((d > 0).mean() + 0.5 * (d == 0).mean())  # noqa: E731
        return Comparison(
            self.names[i], self.names[j], float(self.full[i] - self.full[j]), (float(lo[0]), float(hi[0])),
            wins(d_priv), wins(d_pub), (float(plo[0]), float(phi[0])),
        )


def simulate(
    scores: np.ndarray,
    names: Sequence[str],
    splits: int = 1000,
    seed: int = 0,
    public_fraction: float = PUBLIC_FRACTION,
    public_mask: np.ndarray | None = None,
    level: float = 0.95,
    progress: bool = False,
) -> Simulation:
    """Simulate ``splits`` public/private splits of per-image ``scores`` (entries x images).

    Random splits by default (``public_fraction`` of the images public, exactly). With
    ``public_mask`` (bool, one per image) the split is fixed and each board is bootstrap-resampled
    within itself instead. The whole-set score is bootstrap-resampled in both modes.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(names):
        raise ConfigError(f"scores must be entries x images with {len(names)} rows, got shape {x.shape}")
    if splits < 1:
        raise ConfigError(f"splits must be >= 1, got {splits}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    e, n = x.shape
    xt = np.ascontiguousarray(x.T)
    total = xt.sum(axis=0)
    if public_mask is not None:
        public_mask = np.asarray(public_mask, dtype=bool)
        if public_mask.shape != (n,):
            raise ConfigError(f"public mask must have one flag per image ({n}), got shape {public_mask.shape}")
        n_pub = int(public_mask.sum())
        if n_pub in (0, n):
            raise ConfigError("a fixed split needs at least one public and one private image")
    else:
        n_pub = n_public_of(n, public_fraction)
    n_priv = n - n_pub
    public = np.empty((splits, e))
    private = np.empty((splits, e))
    boot = np.empty((splits, e))
    boot_rng = np.random.default_rng([seed, 1])
    everything = np.arange(n)
    from promptblend.progress import progress_bar

    bar = progress_bar(total=splits, desc="splits", unit="split", disable=not progress, leave=False)
    if public_mask is None:
        chunks = public_masks(n, n_pub, splits, seed)
    else:
        pub_pool, priv_pool = np.flatnonzero(public_mask), np.flatnonzero(~public_mask)
        board_rng = np.random.default_rng([seed, 2])
        chunks = (min(CHUNK, splits - s) for s in range(0, splits, CHUNK))
    start = 0
    for chunk in chunks:
        if public_mask is None:
            c = chunk.shape[0]
            pub_sum = chunk.astype(np.float64) @ xt
            public[start : start + c] = pub_sum / n_pub
            private[start : start + c] = (total - pub_sum) / n_priv
        else:
            c = chunk
            public[start : start + c] = bootstrap_counts(n, pub_pool, c, board_rng) @ xt / n_pub
            private[start : start + c] = bootstrap_counts(n, priv_pool, c, board_rng) @ xt / n_priv
        boot[start : start + c] = bootstrap_counts(n, everything, c, boot_rng) @ xt / n
        start += c
        bar.update(c)
    bar.close()
    return Simulation(list(names), x.mean(axis=1), public, private, boot, n_pub, n_priv, public_mask is not None, seed, level)
