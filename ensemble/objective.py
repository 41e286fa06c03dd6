"""The blend score through per-image sufficient statistics: O(N K^2) per trial, no 384-d vectors.

For a blend ``b_i = sum_j c_j X_ij`` of the columns ``X_i = [Q_i1 .. Q_iK, mu]`` (the runs, each
optionally L2-normalised, and the unit mean vector), the cosine to the unit truth ``y_i`` is
``(A_i . c) / sqrt(c' G_i c)`` with ``A_ij = X_ij . y_i`` and ``G_i = X_i X_i'``. Both are computed
once; a trial is then two small matrix-vector products over N rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_TINY = 1e-300


def _pairs(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(iu, ju, pos)``: the upper-triangle pairs of a k x k matrix in packed order and a symmetric
    k x k table of each pair's packed row."""
    iu, ju = np.triu_indices(k)
    pos = np.empty((k, k), np.int64)
    pos[iu, ju] = pos[ju, iu] = np.arange(iu.size)
    return iu, ju, pos


@dataclass(frozen=True)
class RawStats:
    """Dot products of the raw runs with each other, with the truth and with the run norms.

    ``packed``: K(K+1)/2 x N, feature-major, the upper triangle of each image's K x K Gram matrix
    (``np.triu_indices`` order; half the bytes of the full matrices; the objective without per-run
    normalisation reads it in place), ``truth``: N x K (run . truth), ``norms``: N x K.
    Normalised-run statistics follow by dividing by the norms, so both settings of the normalisation
    switch share one pass.
    """

    packed: np.ndarray
    truth: np.ndarray
    norms: np.ndarray

    @property
    def n(self) -> int:
        """Number of images."""
        return self.truth.shape[0]

    @property
    def k(self) -> int:
        """Number of runs."""
        return self.truth.shape[1]

    @property
    def gram(self) -> np.ndarray:
        """The full N x K x K Gram matrices (a new array)."""
        _, _, pos = _pairs(self.k)
        return np.moveaxis(self.packed[pos], 2, 0)

    @classmethod
    def from_gram(cls, gram: np.ndarray, truth: np.ndarray, norms: np.ndarray) -> "RawStats":
        """Statistics from full N x K x K Gram matrices."""
        iu, ju, _ = _pairs(gram.shape[1])
        return cls(np.ascontiguousarray(gram[:, iu, ju].T), truth, norms)

    def take(self, rows: np.ndarray) -> "RawStats":
        """The statistics of a subset of images."""
        return RawStats(np.ascontiguousarray(self.packed[:, rows]), self.truth[rows], self.norms[rows])

    def select(self, cols) -> "RawStats":
        """The statistics of the runs ``cols`` only (in that order)."""
        c = np.asarray(cols, np.int64)
        iu, ju, _ = _pairs(c.size)
        _, _, pos = _pairs(self.k)
        return RawStats(self.packed[pos[c[iu], c[ju]]], self.truth[:, c], self.norms[:, c])


def _chunk_rows(k: int, d: int, budget: int = 16 << 20) -> int:
    """Rows per chunk so that a float64 chunk of K+1 vectors of D stays near ``budget`` bytes."""
    return max(16, budget // ((k + 1) * d * 8))


def _chunks64(runs, truth: np.ndarray):
    """Yield ``(start, stop, X)``: rows ``start:stop`` as float64 (rows, K+1, D), truth last.

    ``runs`` is a K x N x D array or anything indexed the same way (``runs[j, a:b]``, ``runs.shape``):
    an :class:`ensemble.align.RunStack` of index views, memory maps included; only a chunk is copied.
    """
    k, n, d = runs.shape
    chunk = _chunk_rows(k, d)
    buf = np.empty((min(chunk, n), k + 1, d))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x = buf[: stop - start]
        for j in range(k):
            x[:, j] = runs[j, start:stop]
        x[:, k] = truth[start:stop]
        yield start, stop, x


def raw_stats(runs, truth: np.ndarray) -> RawStats:
    """Statistics of ``runs`` (K x N x D, any float) against unit ``truth`` (N x D), in float64.

    Exact float64 products of the float32 inputs, computed in cache-sized row chunks.
    """
    k, n, _ = runs.shape
    iu, ju, _ = _pairs(k)
    packed = np.empty((iu.size, n))
    tdot = np.empty((n, k))
    norms = np.empty((n, k))
    diag = np.arange(k)
    for start, stop, x in _chunks64(runs, truth):
        g = np.matmul(x, x.transpose(0, 2, 1))
        packed[:, start:stop] = g[:, iu, ju].T
        tdot[start:stop] = g[:, :k, k]
        norms[start:stop] = np.sqrt(np.clip(g[:, diag, diag], 0.0, None))
    return RawStats(packed, tdot, norms)


@dataclass(frozen=True)
class MeanStats:
    """The mean-vector terms: ``runs . mu`` (N x K), ``truth . mu`` (N) and ``mu . mu``."""

    runs: np.ndarray
    truth: np.ndarray
    sq: float

    def take(self, rows: np.ndarray) -> "MeanStats":
        """The terms of a subset of images."""
        return MeanStats(self.runs[rows], self.truth[rows], self.sq)


def mean_stats_many(runs, truth: np.ndarray, mus: list[np.ndarray]) -> list[MeanStats]:
    """Mean-vector terms of ``runs`` (K x N x D) and ``truth`` for each vector in ``mus`` (one pass)."""
    k, n, _ = runs.shape
    m = np.stack([np.asarray(mu, np.float64) for mu in mus], axis=1)  # D x M
    dots = np.empty((n, k + 1, m.shape[1]))
    for start, stop, x in _chunks64(runs, truth):
        dots[start:stop] = x @ m
    return [MeanStats(dots[:, :k, j], dots[:, k, j], float(m[:, j] @ m[:, j])) for j in range(m.shape[1])]


def mean_stats(runs, truth: np.ndarray, mu: np.ndarray) -> MeanStats:
    """Mean-vector terms of ``runs`` (K x N x D) and ``truth`` (N x D) for vector ``mu``, in float64."""
    return mean_stats_many(runs, truth, [mu])[0]


class BlendObjective:
    """The mean cosine of a blend as a function of its coefficients ``c = [w_1..w_K, m]``.

    Built from :class:`RawStats` (one normalisation setting) plus the mean-vector terms (``mean``
    None: no mean vector, its coefficient is ignored), over the images ``rows`` of them (None: all).
    The per-image terms are kept feature-major (T x N, T up to (K+1)(K+2)/2 for the upper triangle
    of each image's Gram, less the columns equal on every row) so an evaluation (and the gradient)
    streams contiguous rows. Without normalisation the run-run terms are the statistics' own
    ``packed`` array, read in place (over all images, then the ``rows`` kept): no copy per study.
    """

    def __init__(self, stats: RawStats, normalise: bool, mean: MeanStats | None, precision: str = "float64",
                 rows: np.ndarray | None = None):
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {precision}")
        every = rows is None or (len(rows) == stats.n and np.array_equal(rows, np.arange(stats.n)))
        rows = np.arange(stats.n) if rows is None else np.asarray(rows)
        n, k, p = rows.size, stats.k, stats.k + 1
        self.k, self.p, self.n = k, p, n
        self.has_mean = mean is not None
        self.normalise = normalise
        self.precision = precision
        dt = np.dtype(precision)
        iu, ju = np.triu_indices(p)
        shared = (iu < k) & (ju < k) & (not normalise)  # read in place from stats.packed
        self._shared = None
        if shared.any():
            packed = stats.packed if dt == stats.packed.dtype else stats.packed.astype(dt)
            mult = np.where(iu[shared] == ju[shared], 1.0, 2.0)
            self._shared = (packed, iu[shared], ju[shared], mult, None if every else rows)
        self._src = (stats, mean, iu[~shared], ju[~shared])
        own = int((~shared).sum())
        chunk = max(64, (8 << 20) // (8 * max(own, 1)))
        lo, hi = np.full(own, np.inf), np.full(own, -np.inf)
        for start in range(0, n, chunk):  # first pass: which columns are equal on every row
            tri = self._tri(rows[start : start + chunk])
            lo, hi = np.minimum(lo, tri.min(axis=0)), np.maximum(hi, tri.max(axis=0))
        const = lo == hi if n else np.ones(own, bool)
        self._tt = np.empty((int((~const).sum()), n), dt)
        self._at = np.empty((p, n), dt)
        for start in range(0, n, chunk):
            part = rows[start : start + chunk]
            self._tt[:, start : start + part.size] = self._tri(part)[:, ~const].T
            self._at[:, start : start + part.size] = self._a(part).T
        oiu, oju = self._src[2], self._src[3]
        self._iu, self._ju = oiu[~const], oju[~const]
        self._ciu, self._cju = oiu[const], oju[const]
        self._cval = np.where(np.isfinite(lo), lo, 0.0)[const]
        del self._src

    def _scale(self, r: np.ndarray) -> np.ndarray:
        stats = self._src[0]
        if not self.normalise:
            return np.ones((r.size, self.k))
        norms = stats.norms[r]
        return np.where(norms > 0, 1.0 / np.maximum(norms, _TINY), 0.0)

    def _a(self, r: np.ndarray) -> np.ndarray:
        """Rows ``r`` of ``A``: blend columns . truth (rows x (K+1))."""
        stats, mean = self._src[:2]
        a = np.zeros((r.size, self.p))
        a[:, : self.k] = stats.truth[r] * self._scale(r)
        if mean is not None:
            a[:, self.k] = mean.truth[r]
        return a

    def _tri(self, r: np.ndarray) -> np.ndarray:
        """Rows ``r`` of this objective's own Gram terms, off-diagonal terms doubled (rows x T)."""
        stats, mean, iu, ju = self._src
        k = self.k
        runs = (iu < k) & (ju < k)
        ik, jk = iu[runs], ju[runs]
        s = self._scale(r)
        out = np.zeros((r.size, iu.size))
        if runs.any():
            _, _, pos = _pairs(k)
            vals = stats.packed[np.ix_(pos[ik, jk], r)].T * s[:, ik] * s[:, jk] * np.where(ik == jk, 1.0, 2.0)
            if self.normalise:  # unit rows: the diagonal is exactly 1 (0 for empty rows), kept exact
                vals[:, ik == jk] = (stats.norms[r] > 0).astype(np.float64)
            out[:, runs] = vals
        if mean is not None:
            to_mean = (iu < k) & (ju == k)
            out[:, to_mean] = 2.0 * mean.runs[r][:, iu[to_mean]] * s[:, iu[to_mean]]
            out[:, (iu == k) & (ju == k)] = mean.sq
        return out

    def _parts(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-image numerator ``A c`` and denominator ``c' G c``."""
        dt = self._at.dtype
        const = float((c[self._ciu] * c[self._cju]) @ self._cval)
        num = c.astype(dt) @ self._at
        den = (c[self._iu] * c[self._ju]).astype(dt) @ self._tt + dt.type(const)
        if self._shared is not None:
            packed, iu, ju, mult, rows = self._shared
            full = (c[iu] * c[ju] * mult).astype(dt) @ packed
            den += full if rows is None else full[rows]
        return num, den

    def cosines(self, c: np.ndarray) -> np.ndarray:
        """Per-image cosine of the blend with coefficients ``c`` (length K+1; ``c[K]`` = mean weight)."""
        num, den = self._parts(np.asarray(c, np.float64))
        return num / np.sqrt(np.maximum(den, np.finfo(den.dtype).tiny))

    def __call__(self, c: np.ndarray) -> float:
        """Mean cosine (the competition score) of the blend with coefficients ``c``."""
        return float(self.cosines(c).mean(dtype=np.float64))

    def value_and_grad(self, c: np.ndarray) -> tuple[float, np.ndarray]:
        """Score and its gradient with respect to ``c`` (used by the gradient optimum).

        ``d cos_i = A_i / r_i - cos_i / (2 den_i) d den_i`` with ``d den_i / d c_m`` summed from the
        triangle terms that hold ``c_m``: two more streaming products, no per-image matrices.
        """
        c = np.asarray(c, np.float64)
        num, den = self._parts(c)
        den = np.maximum(den.astype(np.float64), _TINY)
        r = np.sqrt(den)
        cos = num / r
        v = cos / (2.0 * den)
        terms = [(self._tt @ v.astype(self._tt.dtype), self._iu, self._ju), (self._cval * v.sum(), self._ciu, self._cju)]
        if self._shared is not None:
            packed, iu, ju, mult, rows = self._shared
            if rows is not None:
                v_all = np.zeros(packed.shape[1])
                v_all[rows] = v
            terms.append((packed @ (v if rows is None else v_all).astype(packed.dtype) * mult, iu, ju))
        dden = np.zeros(self.p)
        for q, iu, ju in terms:
            q = np.asarray(q, np.float64)
            dden += np.bincount(iu, q * c[ju], self.p) + np.bincount(ju, q * c[iu], self.p)
        grad = ((self._at @ (1.0 / r).astype(self._at.dtype)).astype(np.float64) - dden) / max(self.n, 1)
        return float(cos.mean()), grad


def direct_cosines(runs: np.ndarray, truth: np.ndarray, c: np.ndarray, normalise: bool, mu: np.ndarray | None) -> np.ndarray:
    """Per-image cosine of the blend computed the plain way on the 384-d vectors (float64)."""
    x = runs.astype(np.float64)
    if normalise:
        norms = np.linalg.norm(x, axis=2, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    b = np.tensordot(np.asarray(c[: len(runs)], np.float64), x, axes=1)
    if mu is not None:
        b = b + c[len(runs)] * mu.astype(np.float64)
    y = truth.astype(np.float64)
    return np.einsum("ij,ij->i", b, y) / np.maximum(np.linalg.norm(b, axis=1), np.sqrt(_TINY))
