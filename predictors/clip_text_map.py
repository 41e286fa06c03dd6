"""``clip-text-map``: a zero-shot predictor. A linear map from CLIP text embeddings to MiniLM vectors,
fitted by ridge regression on a prompt bank's ``keys`` (CLIP text) and ``values`` (MiniLM) that
``index.build`` stores, is applied to CLIP *image* embeddings. No training images are needed.

The modality gap: CLIP image and text embeddings of the same content sit in different cones, so an
image embedding ``x`` is shifted by the difference of the means before the map,
``x - image_mean + text_mean`` (``gap="shift"``; ``"none"`` applies the map to ``x`` as it is).
``text_mean`` is the mean of the bank's unit keys. ``image_mean`` is the mean unit image embedding of
the first ``gap_sample`` images of ``gap_images`` when that names an image set, else of the set being
predicted (the runner hands it over before predicting; a bare :meth:`predict` call with neither is
refused, never shifted by a guess).

The ridge penalty: one map is fitted per penalty and each is scored (mean cosine) on held-out bank
prompts. Text keys vary in fewer directions than image embeddings do, and a weak penalty amplifies
exactly the directions in which only images vary; so for a set of images the penalty used is the best
on held-out prompts among those under which the centred image sample spreads no wider through the map
than the held-out text keys do (:meth:`TextMap.choose`; on the small demo's test split this took the score from 0.478 with the
text-best penalty to 0.642, above the mean vector's 0.618: ``benchmarks/bench_levers.py``).

The fitted map is saved next to the bank (``text-map-<key>.npz``, atomic; in the cache folder when
the bank's folder is read-only), keyed by the bank's build hash, the CLIP's identity
(:attr:`promptblend.clip.ClipBundle.identity`) and the fit settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptblend import atomic
from promptblend.errors import BankError, ConfigError, OutputError
from promptblend.vectors import l2_normalise

from .base import Prediction
from .clip_bank import ClipBankPredictor

log = logging.getLogger(__name__)

#: Ridge penalties tried (per row: the loss is the mean squared error plus alpha * |W|^2).
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HELD_OUT = 0.1
MAX_HELD_OUT = 20000
CHUNK = 65536
FORMAT = 2
GAPS = ("shift", "none")
#: How much wider than the held-out text keys an image sample may spread through a map (sampling slack).
SPREAD_SLACK = 1.1


@dataclass
class TextMap:
    """``y = normalise((x - image_mean + text_mean) @ weights[a] + biases[a])``: CLIP (D) -> MiniLM (384), one
    ridge solution per penalty ``info["alphas"][a]`` (:meth:`choose` picks one for a set of images)."""

    weights: np.ndarray  # (A, D, 384) float32
    biases: np.ndarray  # (A, 384) float32
    text_mean: np.ndarray  # (D,) float32: mean of the unit CLIP text keys it was fitted on
    info: dict  # alphas, held-out scores and text spreads per alpha, the text-best alpha, row counts, key

    def choose(self, images: np.ndarray | None = None) -> int:
        """The penalty (index) for unit image embeddings ``images`` (a sample of the set): the best on held-out
        prompts among those whose image predictions (centred) spread no wider than the held-out text
        ones (up to :data:`SPREAD_SLACK`), so the map does not amplify directions in which only images vary (the largest penalty
        when none qualifies); without images, the best on held-out prompts."""
        scores = np.asarray(self.info["held_out_scores"])
        if images is None or len(images) < 2:
            return int(np.argmax(scores))
        centred = np.asarray(images, np.float32) - np.asarray(images, np.float32).mean(0)
        spread = np.array([np.linalg.norm(centred @ w, axis=1).mean() for w in self.weights])
        ok = spread <= SPREAD_SLACK * np.asarray(self.info["text_spread"])
        return int(np.argmax(np.where(ok, scores, -np.inf))) if ok.any() else len(scores) - 1

    def apply(self, emb: np.ndarray, image_mean: np.ndarray | None = None, alpha: int | None = None) -> np.ndarray:
        """Unit 384-d rows for unit CLIP embeddings ``emb`` with penalty index ``alpha`` (default: the
        text-best); ``image_mean`` given: shifted across the gap first."""
        a = self.choose() if alpha is None else alpha
        x = np.asarray(emb, np.float32)
        if image_mean is not None:
            x = x - image_mean + self.text_mean
        return l2_normalise(x @ self.weights[a] + self.biases[a])

    def save(self, path: Path) -> None:
        """Write the map as one ``.npz`` (atomically)."""
        with atomic.atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, weights=self.weights, biases=self.biases, text_mean=self.text_mean,
                     info=np.array(json.dumps(self.info)))

    @classmethod
    def load(cls, path: Path) -> TextMap:
        """Read a saved map; a damaged file raises :class:`BankError`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                m = cls(z["weights"], z["biases"], z["text_mean"], json.loads(str(z["info"])))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated, missing member, bad JSON
            raise BankError(f"{path} is not a readable text map: {e}") from e
        a, d = len(m.info.get("alphas", ())), m.text_mean.shape[0] if m.text_mean.ndim == 1 else -1
        if m.weights.shape[:2] != (a, d) or m.biases.shape != (a, m.weights.shape[2]):
            raise BankError(f"{path} holds arrays of the wrong shapes")
        return m


class _Moments:
    """Sums for a ridge fit with intercept: n, sum x, sum y, X'X, X'Y (float64)."""

    def __init__(self, d: int, k: int) -> None:
        self.n, self.sx, self.sy = 0, np.zeros(d), np.zeros(k)
        self.xx, self.xy = np.zeros((d, d)), np.zeros((d, k))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y

    def __add__(self, other: _Moments) -> _Moments:
        out = _Moments(len(self.sx), len(self.sy))
        for name in ("n", "sx", "sy", "xx", "xy"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def solver(self):
        """``alpha -> (weight, bias)`` of the ridge fit on these rows (one eigendecomposition for all alphas)."""
        mx, my = self.sx / self.n, self.sy / self.n
        cov = self.xx / self.n - np.outer(mx, mx)
        cross = self.xy / self.n - np.outer(mx, my)
        lam, q = np.linalg.eigh(cov)
        qc = q.T @ cross

        def solve(alpha: float) -> tuple[np.ndarray, np.ndarray]:
            w = q @ (qc / (np.maximum(lam, 0.0) + alpha)[:, None])
            return w, my - mx @ w

        return solve


def fit_text_map(keys: np.ndarray, values: np.ndarray, alphas=ALPHAS, held_out: float = HELD_OUT, seed: int = 0,
                 chunk: int = CHUNK) -> TextMap:
    """Ridge maps from ``keys`` (N, D unit CLIP text rows) to ``values`` (N, 384 MiniLM rows), one per
    penalty, streamed in chunks (memory-mapped banks of any size): each penalty is scored (mean cosine)
    on a seeded held-out fraction of rows (at most :data:`MAX_HELD_OUT`), then all are refitted on all rows."""
    n = len(keys)
    n_val = min(MAX_HELD_OUT, max(1, round(n * held_out)))
    if n - n_val < 2:
        raise BankError(f"a text map needs at least 3 bank prompts, the bank has {n}")
    val = np.zeros(n, bool)
    val[np.random.default_rng(seed).choice(n, n_val, replace=False)] = True
    train, held = _Moments(keys.shape[1], values.shape[1]), _Moments(keys.shape[1], values.shape[1])
    xv, yv = [], []
    for s in range(0, n, chunk):
        x, y, v = np.asarray(keys[s : s + chunk]), np.asarray(values[s : s + chunk]), val[s : s + chunk]
        train.add(x[~v], y[~v])
        held.add(x[v], y[v])
        xv.append(x[v])
        yv.append(y[v])
    xv, yv = np.concatenate(xv).astype(np.float64), l2_normalise(np.concatenate(yv).astype(np.float32))
    solve = train.solver()
    scores = []
    for alpha in alphas:
        w, b = solve(alpha)
        scores.append(float(np.mean(np.sum(l2_normalise((xv @ w + b).astype(np.float32)) * yv, axis=1))))
    full = (train + held).solver()
    fitted = [full(alpha) for alpha in alphas]
    centred = xv - xv.mean(0)
    info = {"alpha": alphas[int(np.argmax(scores))], "alphas": list(alphas), "held_out_scores": scores,
            "text_spread": [float(np.linalg.norm(centred @ w, axis=1).mean()) for w, _ in fitted],
            "n_fit": n, "n_held_out": n_val, "seed": seed}
    weights = np.stack([w for w, _ in fitted]).astype(np.float32)
    return TextMap(weights, np.stack([b for _, b in fitted]).astype(np.float32),
                   ((train.sx + held.sx) / n).astype(np.float32), info)


def text_map_for(bank, clip_identity: str, alphas=ALPHAS, held_out: float = HELD_OUT, seed: int = 0) -> TextMap:
    """The map of ``bank`` (a :class:`promptblend.bank.Bank` with CLIP keys) for the CLIP named by
    ``clip_identity``: loaded from beside the bank when fitted before, else fitted and saved there."""
    from promptblend.cache import cache_dir

    if bank.key_model is None:
        raise BankError(f"bank {bank.folder} has no CLIP keys; rebuild it with --keys MODEL")
    ident = {"format": FORMAT, "bank": bank.manifest.get("build_hash"), "clip": clip_identity,
             "alphas": list(alphas), "held_out": held_out, "seed": seed}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    name = f"text-map-{key}.npz"
    places = ([bank.folder / name] if bank.folder is not None else []) + [cache_dir() / "text-maps" / name]
    for path in places:
        if path.is_file():
            try:
                return TextMap.load(path)
            except BankError as e:
                log.warning("%s; refitting it", e)
    tmap = fit_text_map(bank.keys, bank.values, alphas, held_out, seed)
    tmap.info.update(key=key, **ident)
    for path in places:
        try:
            tmap.save(path)
            break
        except OutputError as e:  # a read-only bank folder: the cache folder instead
            log.info("%s; saving the text map in the cache folder", e)
    return tmap


def sample_embeddings(embed, transform, image_set, limit: int) -> np.ndarray:
    """Unit embeddings (``embed``: pixel batch -> unit rows) of the first ``limit`` images of ``image_set``."""
    import torch

    out, batch = [], []
    for sample in image_set.samples(0, limit, split_workers=False):
        if sample[1] is None:  # an undecodable image (a skipped row of a --skip-bad run)
            continue
        batch.append(transform(sample[1]))
        if len(batch) == 64:
            out.append(embed(torch.stack(batch)))
            batch = []
    if batch:
        out.append(embed(torch.stack(batch)))
    if not out:
        raise ConfigError("the modality gap needs at least one image")
    return np.concatenate(out).astype(np.float32)


class ClipTextMapPredictor(ClipBankPredictor):
    """CLIP image embedding -> shifted across the modality gap -> the bank's ridge text map -> 384-d.

    ``bank``: a folder from ``index.build --keys MODEL`` (keys by the same CLIP as ``clip_model`` /
    ``clip_pretrained``); ``gap``: ``shift`` or ``none``; ``gap_images``: the image set whose sample
    gives the image mean and the ridge penalty (:meth:`TextMap.choose`; default: the set being
    predicted); ``gap_sample``: images in that sample; ``tta``: views (:mod:`.clip_views`) whose unit
    embeddings are averaged before the map.
    """

    label, bank_param = "clip-text-map", "bank"

    def __init__(self, bank: str | None = None, clip_model: str = "ViT-H-14",
                 clip_pretrained: str | None = "laion2b_s32b_b79k", gap: str = "shift", gap_images: str | None = None,
                 gap_sample: int = 1000, tta: list | None = None, device: str | None = None) -> None:
        super().__init__(bank, clip_model, clip_pretrained, device, tta, gap=gap, gap_images=gap_images,
                         gap_sample=gap_sample)
        if gap not in GAPS:
            raise ConfigError(f"clip-text-map: gap must be one of {', '.join(GAPS)}, got {gap!r}")
        if int(gap_sample) < 1:
            raise ConfigError(f"clip-text-map: gap_sample must be >= 1, got {gap_sample}")
        self.gap, self.gap_images, self.gap_sample = gap, gap_images, int(gap_sample)
        self.image_mean: np.ndarray | None = None
        self.alpha: int | None = None  # the penalty chosen for the image sample (None: the text-best)

    def setup(self) -> None:
        """Open the bank, check its key model, load CLIP, fit (or load) the map; the stated image mean."""
        self.text_map = text_map_for(self.open_bank(), self.clip.identity)
        if self.gap_images:
            from promptblend.imagesets import open_image_set

            self._sample(open_image_set(self.gap_images))

    def _sample(self, image_set) -> None:
        """The image mean and the ridge penalty from the first ``gap_sample`` images of ``image_set``."""
        emb = sample_embeddings(self.embed, self.transform(), image_set, self.gap_sample)
        self.image_mean, self.alpha = emb.mean(0), self.text_map.choose(emb)
        log.info("clip-text-map: image mean and penalty %g from %d images", self.text_map.info["alphas"][self.alpha],
                 len(emb))

    def prepare(self, image_set) -> None:
        """The image sample is the set being predicted (unless ``gap_images`` stated another)."""
        if not self.gap_images:
            self.ensure_setup()
            self._sample(image_set)

    def predict_batch(self, batch) -> Prediction:
        """Unit CLIP embeddings (views averaged) -> across the gap -> the text map."""
        self.ensure_setup()
        if self.gap == "shift" and self.image_mean is None:
            raise ConfigError("clip-text-map has no image mean to shift by: run it through predictors.run (the set "
                              "being predicted), call prepare(image_set) first, or pass gap_images=SET")
        mean = None if self.gap == "none" else self.image_mean
        return Prediction(self.text_map.apply(self.embed(batch), mean, self.alpha))
