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


@dataclass(frozen=True)
class RawStats:
    """Dot products of the raw runs with each other, with the truth and with the run norms.

    ``gram``: N x K x K, ``truth``: N x K (run . truth), ``norms``: N x K. Normalised-run statistics
    follow by dividing by the norms, so both settings of the normalisation switch share one pass.
    """

    gram: np.ndarray
    truth: np.ndarray
    norms: np.ndarray

    @property
    def n(self) -> int:
        """Number of images."""
        return self.truth.shape[0]

    def take(self, rows: np.ndarray) -> "RawStats":
        """The statistics of a subset of images."""
        return RawStats(self.gram[rows], self.truth[rows], self.norms[rows])


def _chunks64(runs: np.ndarray, truth: np.ndarray, chunk: int = 1024):
    """Yield ``(start, stop, X)``: rows ``start:stop`` as float64 (rows, K+1, D), truth last."""
    k, n, d = runs.shape
    buf = np.empty((min(chunk, n), k + 1, d))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x = buf[: stop - start]
        x[:, :k] = runs[:, start:stop].transpose(1, 0, 2)
        x[:, k] = truth[start:stop]
        yield start, stop, x


def raw_stats(runs: np.ndarray, truth: np.ndarray) -> RawStats:
    """Statistics of ``runs`` (K x N x D, any float) against unit ``truth`` (N x D), in float64.

    Exact float64 products of the float32 inputs, computed in cache-sized row chunks.
    """
    k, n, _ = runs.shape
    gram = np.empty((n, k, k))
    tdot = np.empty((n, k))
    for start, stop, x in _chunks64(runs, truth):
        g = np.matmul(x, x.transpose(0, 2, 1))
        gram[start:stop] = g[:, :k, :k]
        tdot[start:stop] = g[:, :k, k]
    norms = np.sqrt(np.clip(np.diagonal(gram, axis1=1, axis2=2), 0.0, None))
    return RawStats(gram, tdot, norms)


@dataclass(frozen=True)
class MeanStats:
    """The mean-vector terms: ``runs . mu`` (N x K), ``truth . mu`` (N) and ``mu . mu``."""

    runs: np.ndarray
    truth: np.ndarray
    sq: float

    def take(self, rows: np.ndarray) -> "MeanStats":
        """The terms of a subset of images."""
        return MeanStats(self.runs[rows], self.truth[rows], self.sq)


def mean_stats_many(runs: np.ndarray, truth: np.ndarray, mus: list[np.ndarray]) -> list[MeanStats]:
    """Mean-vector terms of ``runs`` (K x N x D) and ``truth`` for each vector in ``mus`` (one pass)."""
    k, n, _ = runs.shape
    m = np.stack([np.asarray(mu, np.float64) for mu in mus], axis=1)  # D x M
    dots = np.empty((n, k + 1, m.shape[1]))
    for start, stop, x in _chunks64(runs, truth):
        dots[start:stop] = x @ m
    return [MeanStats(dots[:, :k, j], dots[:, k, j], float(m[:, j] @ m[:, j])) for j in range(m.shape[1])]


def mean_stats(runs: np.ndarray, truth: np.ndarray, mu: np.ndarray) -> MeanStats:
    """Mean-vector terms of ``runs`` (K x N x D) and ``truth`` (N x D) for vector ``mu``, in float64."""
    return mean_stats_many(runs, truth, [mu])[0]


class BlendObjective:
    """The mean cosine of a blend as a function of its coefficients ``c = [w_1..w_K, m]``.

    Built from :class:`RawStats` (one normalisation setting) plus the mean-vector terms (``mean``
    None: no mean vector, its coefficient is ignored). The statistics are stored feature-major
    ((K+1) x N and T x N, T = (K+1)(K+2)/2 for the upper triangle of each image's Gram) so an
    evaluation is two vector-matrix products that stream contiguous rows.
    """

    def __init__(self, stats: RawStats, normalise: bool, mean: MeanStats | None, precision: str = "float64"):
        n, k = stats.truth.shape
        scale = 1.0 / np.maximum(stats.norms, _TINY) if normalise else np.ones((n, k))
        if normalise:
            scale = np.where(stats.norms > 0, scale, 0.0)
        p = k + 1
        a = np.zeros((n, p))
        a[:, :k] = stats.truth * scale
        g = np.zeros((n, p, p))
        g[:, :k, :k] = stats.gram * scale[:, :, None] * scale[:, None, :]
        if normalise:  # unit rows: the diagonal is exactly 1 (0 for empty rows), kept exact
            g[:, np.arange(k), np.arange(k)] = (stats.norms > 0).astype(np.float64)
        if mean is not None:
            a[:, k] = mean.truth
            g[:, :k, k] = g[:, k, :k] = mean.runs * scale
            g[:, k, k] = mean.sq
        iu, ju = np.triu_indices(p)
        tri = g[:, iu, ju] * np.where(iu == ju, 1.0, 2.0)
        # columns equal on every row (the unit diagonal, mu . mu) become one constant term
        const = np.all(tri == tri[:1], axis=0) if n else np.ones(iu.size, bool)
        self.k, self.p, self.n = k, p, n
        self.has_mean = mean is not None
        self.normalise = normalise
        self._a, self._g = a, g
        self._at = np.ascontiguousarray(a.T)
        self._iu, self._ju = iu[~const], ju[~const]
        self._tt = np.ascontiguousarray(tri[:, ~const].T)
        self._ciu, self._cju = iu[const], ju[const]
        self._cval = tri[0, const] if n else np.zeros(int(const.sum()))
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {precision}")
        self.precision = precision
        if precision == "float32":  # half the bytes per evaluation; scores agree to ~1e-7
            self._at, self._tt = self._at.astype(np.float32), self._tt.astype(np.float32)

    def cosines(self, c: np.ndarray) -> np.ndarray:
        """Per-image cosine of the blend with coefficients ``c`` (length K+1; ``c[K]`` = mean weight)."""
        c = np.asarray(c, np.float64)
        const = float((c[self._ciu] * c[self._cju]) @ self._cval)
        dt = self._at.dtype
        num = c.astype(dt) @ self._at
        den = (c[self._iu] * c[self._ju]).astype(dt) @ self._tt + dt.type(const)
        return num / np.sqrt(np.maximum(den, np.finfo(dt).tiny))

    def __call__(self, c: np.ndarray) -> float:
        """Mean cosine (the competition score) of the blend with coefficients ``c``."""
        return float(self.cosines(c).mean(dtype=np.float64))

    def value_and_grad(self, c: np.ndarray) -> tuple[float, np.ndarray]:
        """Score and its gradient with respect to ``c`` (used by the gradient optimum)."""
        c = np.asarray(c, np.float64)
        num = self._a @ c
        gc = (self._g.reshape(-1, self.p) @ c).reshape(self.n, self.p)
        den = np.maximum(gc @ c, _TINY)
        r = np.sqrt(den)
        cos = num / r
        grad = (self._a.T @ (1.0 / r) - gc.T @ (cos / den)) / self.n
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
