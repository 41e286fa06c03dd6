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


def raw_stats(runs: np.ndarray, truth: np.ndarray) -> RawStats:
    """Statistics of ``runs`` (K x N x D, any float) against unit ``truth`` (N x D), in float64."""
    k, n, _ = runs.shape
    gram = np.empty((n, k, k), np.float64)
    tdot = np.empty((n, k), np.float64)
    y = truth.astype(np.float64)
    x = [r.astype(np.float64) for r in runs]
    for a in range(k):
        tdot[:, a] = np.einsum("ij,ij->i", x[a], y)
        for b in range(a, k):
            gram[:, a, b] = gram[:, b, a] = np.einsum("ij,ij->i", x[a], x[b])
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


def mean_stats(runs: np.ndarray, truth: np.ndarray, mu: np.ndarray) -> MeanStats:
    """Mean-vector terms of ``runs`` (K x N x D) and ``truth`` (N x D) for vector ``mu``, in float64."""
    mu = mu.astype(np.float64)
    run_mu = np.stack([r.astype(np.float64) @ mu for r in runs], axis=1)
    return MeanStats(run_mu, truth.astype(np.float64) @ mu, float(mu @ mu))


class BlendObjective:
    """The mean cosine of a blend as a function of its coefficients ``c = [w_1..w_K, m]``.

    Built from :class:`RawStats` (one normalisation setting) plus the mean-vector terms (``mean``
    None: no mean vector, its coefficient is ignored). The statistics are stored feature-major
    ((K+1) x N and T x N, T = (K+1)(K+2)/2 for the upper triangle of each image's Gram) so an
    evaluation is two vector-matrix products that stream contiguous rows.
    """

    def __init__(self, stats: RawStats, normalise: bool, mean: MeanStats | None):
        n, k = stats.truth.shape
        scale = 1.0 / np.maximum(stats.norms, _TINY) if normalise else np.ones((n, k))
        if normalise:
            scale = np.where(stats.norms > 0, scale, 0.0)
        p = k + 1
        a = np.zeros((n, p))
        a[:, :k] = stats.truth * scale
        g = np.zeros((n, p, p))
        g[:, :k, :k] = stats.gram * scale[:, :, None] * scale[:, None, :]
        if mean is not None:
            a[:, k] = mean.truth
            g[:, :k, k] = g[:, k, :k] = mean.runs * scale
            g[:, k, k] = mean.sq
        iu, ju = np.triu_indices(p)
        tri = g[:, iu, ju] * np.where(iu == ju, 1.0, 2.0)
        self.k, self.p, self.n = k, p, n
        self.has_mean = mean is not None
        self.normalise = normalise
        self._a, self._g, self._iu, self._ju = a, g, iu, ju
        self._at = np.ascontiguousarray(a.T)
        self._tt = np.ascontiguousarray(tri.T)

    def cosines(self, c: np.ndarray) -> np.ndarray:
        """Per-image cosine of the blend with coefficients ``c`` (length K+1; ``c[K]`` = mean weight)."""
        c = np.asarray(c, np.float64)
        # einsum, not BLAS: a threaded gemv thrashes on busy cores for these short, wide products
        num = np.einsum("j,jn->n", c, self._at)
        den = np.einsum("j,jn->n", c[self._iu] * c[self._ju], self._tt)
        return num / np.sqrt(np.maximum(den, _TINY))

    def __call__(self, c: np.ndarray) -> float:
        """Mean cosine (the competition score) of the blend with coefficients ``c``."""
        return float(self.cosines(c).mean())

    def value_and_grad(self, c: np.ndarray) -> tuple[float, np.ndarray]:
        """Score and its gradient with respect to ``c`` (used by the gradient optimum)."""
        c = np.asarray(c, np.float64)
        num = self._a @ c
        gc = self._g @ c
        den = np.maximum(np.einsum("ij,j->i", gc, c), _TINY)
        r = np.sqrt(den)
        grad = (self._a / r[:, None] - (num / (r * den))[:, None] * gc).mean(axis=0)
        return float((num / r).mean()), grad


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
