"""Paired data: image-prompt pairs, their cached CLIP features and MiniLM targets, and the batch order.

The batch order is a pure function of (seed, number of pairs, global batch, step), so a resumed or
data-parallel run reads the same rows at the same step: :class:`BatchPlan` splits each global batch
over ranks and gradient-accumulation micro-batches, and a row's *key* (``epoch * n + row``) seeds
its augmentation, so decoding in any worker of any process gives the same pixels. Pixels of every
source (folder, shards, Parquet) come through the one batch dataset of
:mod:`promptblend.imagesets.batches`, decoded in DataLoader workers, in the order the plan hands in; a
set read as a stream (shards, Parquet row groups) is visited chunk by chunk in a seeded order.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from promptblend import atomic
from promptblend.errors import (
    ConfigError,
    ImageSetError,
    ModelNotFoundError,
    TruthError,
)
from promptblend.imagesets import Concat, ImageSet, open_image_set, read_prompts_csv
from promptblend.imagesets.batches import BadBatch, Batches, no_collate, row_batches
from promptblend.text import encode

Images = ImageSet | str | Path | Sequence[str | Path]  # a set, or anything open_image_set opens
Prompts = str | Path | dict[str, str] | Sequence[str] | None


@dataclass
class PairData:
    """Image-prompt pairs reduced to what training needs: the images, CLIP features, MiniLM targets.

    ``images`` holds every pair's image (row i is pair i, any source); ``features`` is None when the
    tower itself trains (fine-tuning reads pixels); ``val_start`` is the first row of a separate
    validation set appended to the training rows (None: split by fraction). ``groups``: rows per chunk
    of the training rows when they are read as a stream (shards, Parquet row groups; empty: any order).
    """

    ids: list[str]
    prompts: list[str]
    images: ImageSet
    features: np.ndarray | None  # float32 (N, clip_dim), unit rows
    targets: np.ndarray  # float32 (N, 384), unit rows
    clip: tuple[str, str | None]
    val_start: int | None = None
    groups: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


def resolve_pairs(images: Images, prompts: Prompts = None) -> tuple[ImageSet, list[str]]:
    """Turn images (a set, a folder, shards, a Parquet or image file paths) and prompts (a CSV, an
    id->prompt dict, a list aligned with the images, or None for the set's own truth) into aligned pairs."""
    if isinstance(images, (list, tuple)) and not images:
        raise ImageSetError("no images given")
    image_set = open_image_set(images)
    if prompts is None:
        return image_set, image_set.prompt_list()
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts_csv(prompts)
    if isinstance(prompts, dict):
        image_set = image_set.with_prompts(prompts)
        return image_set, image_set.prompt_list()
    prompts = [str(p) for p in prompts]
    if len(prompts) != len(image_set):
        raise TruthError(f"{len(prompts)} prompts for {len(image_set)} images")
    if any(not p.strip() for p in prompts):
        raise TruthError("empty prompt in the prompt list")
    return image_set, prompts


def seeded_pixels(image, key: int, transform, augment, seed: int):
    """``transform(image)``, or ``augment(image)`` with torch's RNG seeded by (``seed``, ``key``)."""
    import torch

    if augment is None:
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + int(key))
        return augment(image)


class SeededPixels:
    """A batch ``prepare``: an image's pixels, augmented with the RNG seeded by its key (see :func:`seeded_pixels`)."""

    def __init__(self, transform, augment=None, seed: int = 0) -> None:
        self.transform, self.augment, self.seed = transform, augment, seed

    def __call__(self, image, key: int):
        return seeded_pixels(image, key, self.transform, self.augment, self.seed)


class PixelTargets:
    """A batch ``collate`` run in the worker: stacked pixels, and the targets of the keys' rows (``key % n``)."""

    def __init__(self, targets: np.ndarray | None = None) -> None:
        self.targets = targets

    def __call__(self, keys: list[int], items: list):
        pixels = torch.stack(items)
        if self.targets is None:
            return pixels
        return pixels, torch.from_numpy(self.targets[[k % len(self.targets) for k in keys]])


def pixel_batches(images: ImageSet, rows: Sequence[int], order: Sequence[Sequence[int]], transform, augment=None,
                  seed: int = 0, targets: np.ndarray | None = None) -> Batches:
    """The one batch dataset over ``images`` for pairs ``rows``: keys of ``order`` (``epoch * n + i``) read
    row ``rows[i]``; batches are ``(pixels, targets[i])``, or pixels alone when ``targets`` is None."""
    return Batches(images, order, SeededPixels(transform, augment, seed), rows=rows, collate=PixelTargets(targets))


def image_batches(images: ImageSet, rows: Sequence[int], transform, batch_size: int) -> Batches:
    """Pixel batches of pairs ``rows`` in that order (for features and predictions)."""
    return pixel_batches(images, rows, row_batches(0, len(rows), batch_size), transform)


def loader(batches: Batches, workers: int, pin_memory: bool = False):
    """Iterate ``batches`` through a DataLoader with ``workers`` decoding; a bad image raises its named error."""
    data = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=no_collate, num_workers=workers,
                                       pin_memory=pin_memory)
    for batch in data:
        if isinstance(batch, BadBatch):
            raise batch.bad[0].error()
        yield batch


class Keyed:
    """Give a row-indexed dataset the loop's keys (``epoch * n + row``)."""

    keyed = True

    def __init__(self, dataset) -> None:
        self.dataset, self.n = dataset, len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int):
        return self.dataset[int(key) % self.n]


def clip_key(clip: tuple[str, str | None]) -> str:
    """Identity of a CLIP model for caches: name plus tag or weights-file content digest."""
    from promptblend.clip import clip_identity, is_weights_file

    if is_weights_file(clip[1]) and not Path(clip[1]).is_file():
        raise ModelNotFoundError(f"CLIP weights file not found: {clip[1]}")
    return hashlib.sha256(clip_identity(clip[0], clip[1]).encode()).hexdigest()[:16]


def clip_image_features(
    image_set: ImageSet,
    clip: tuple[str, str | None],
    device: str | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    progress: bool = True,
) -> np.ndarray:
    """Unit CLIP image embeddings (N, D) of an image set, cached on disk per CLIP model and set."""
    from promptblend.progress import progress_bar

    from promptblend.cache import cache_dir
    from promptblend.clip import embed_images, load_clip

    key = hashlib.sha256(f"{clip_key(clip)}:{image_set.fingerprint(fast=True)}".encode()).hexdigest()[:24]
    path = cache_dir() / "clip-features" / f"{key}.npy"
    if path.is_file():
        feats = atomic.load_npy(path)
        if feats.shape[0] == len(image_set):
            return feats
    bundle = load_clip(clip[0], clip[1], device)
    batches = loader(image_batches(image_set, range(len(image_set)), bundle.preprocess, batch_size), num_workers)
    total = -(-len(image_set) // batch_size)
    out = [embed_images(bundle, x) for x in progress_bar(batches, desc="clip features", unit="batch", total=total,
                                                  disable=not progress)]
    feats = np.concatenate(out).astype(np.float32)
    atomic.save_npy(path, feats)
    return feats


def prompt_targets(prompts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings (the scoring model) of prompts, embedded once and cached on disk by their text."""
    from promptblend.cache import cache_dir

    key = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:24]
    path = cache_dir() / "minilm-targets" / f"{key}.npy"
    if path.is_file():
        return atomic.load_npy(path)
    targets = encode(list(prompts))
    atomic.save_npy(path, targets)
    return targets


def prepare_pairs(
    images: Images,
    prompts: Prompts,
    clip: tuple[str, str | None],
    device: str | None = None,
    num_workers: int = 2,
    progress: bool = True,
    features: bool = True,
    val_images: Images | None = None,
) -> PairData:
    """Resolve the pairs (and a separate validation set) and embed them: CLIP features (when
    ``features``) and MiniLM prompt targets."""
    sets = [resolve_pairs(images, prompts)] + ([resolve_pairs(val_images)] if val_images is not None else [])
    # fine-tuning reads a streamed set (shards, Parquet) chunk by chunk: its rows must all be training rows
    groups = () if features else sets[0][0].groups
    if groups and val_images is None:
        raise ConfigError(f"fine-tuning streams the pixels of {sets[0][0].root} chunk by chunk: give a --val set "
                          "(any source) instead of a held-out fraction")
    ids, texts, feats = [], [], []
    for image_set, set_texts in sets:
        ids += list(image_set.ids)
        texts += set_texts
        if features:
            feats.append(clip_image_features(image_set, clip, device, num_workers=num_workers, progress=progress))
    val_start = len(sets[0][0]) if val_images is not None else None
    images_all = Concat([s for s, _ in sets]) if len(sets) > 1 else sets[0][0]
    return PairData(
        ids, texts, images_all, np.concatenate(feats) if features else None, prompt_targets(texts),
        (clip[0], clip[1]), val_start, groups,
    )


def split_indices(n: int, val_frac: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / held-out split of ``n`` pairs (at least one held out when ``val_frac`` > 0);
    with ``groups`` (a prompt id per row) whole groups are held out, so no prompt is on both sides."""
    units = n if groups is None else int(groups.max()) + 1
    perm = np.random.default_rng(seed).permutation(units)
    n_val = 0 if val_frac <= 0 else max(1, int(round(units * val_frac)))
    if units - n_val < 1:
        raise ConfigError(f"{n} pairs leave nothing to train on with val_frac={val_frac}")
    if groups is None:
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    held = np.isin(groups, perm[:n_val])
    return np.flatnonzero(~held), np.flatnonzero(held)


def prompt_groups(prompts: Sequence[str]) -> np.ndarray:
    """A prompt id per row: rows with the same prompt text share one (ids 0.. in first-seen order)."""
    ids: dict[str, int] = {}
    return np.fromiter((ids.setdefault(p, len(ids)) for p in prompts), np.int64, len(prompts))


def several_seeds(groups: np.ndarray) -> bool:
    """Whether every prompt has the same number (> 1) of images: a set made with several seeds per prompt."""
    counts = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    return bool(len(counts) > 0 and counts.min() == counts.max() > 1)


def data_split(data: PairData, val_frac: float, seed: int,
               one_per_prompt: bool | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Training and validation rows (the appended validation set, else a seeded fraction) and whether an
    epoch reads one image per prompt. ``one_per_prompt`` None: on when the training rows hold several seeds
    per prompt. When on, a fraction split holds out whole prompts and validation keeps one fixed image
    (the first) per prompt, so near-identical images neither leak nor inflate the score."""
    groups = prompt_groups(data.prompts)
    if data.val_start is not None:
        train_idx, val_idx = np.arange(data.val_start), np.arange(data.val_start, len(data))
        on = several_seeds(prompt_groups(data.prompts[: data.val_start])) if one_per_prompt is None else one_per_prompt
    else:
        on = several_seeds(groups) if one_per_prompt is None else one_per_prompt
        train_idx, val_idx = split_indices(len(data), val_frac, seed, groups if on else None)
    if on:
        val_idx = np.sort(val_idx[np.unique(groups[val_idx], return_index=True)[1]])
    return train_idx, val_idx, on


@dataclass(frozen=True)
class BatchPlan:
    """Which keys rank ``rank`` of ``world`` reads at each step: a seeded permutation per epoch, cut
    into global batches, each split over ranks and then into ``accum`` micro-batches."""

    n: int
    batch_size: int
    seed: int
    world: int = 1
    rank: int = 0
    accum: int = 1
    #: Rows per shard when the rows stream from shards: an epoch then visits the shards in a seeded
    #: order, each shard's rows in stream order (so every batch is a run of the stream).
    groups: tuple[int, ...] = ()
    #: Shard streams (``parts`` > 1): the shards of an epoch are dealt to ``parts`` streams and each
    #: global batch takes ``batch_size / parts`` rows from every stream in turn, so rank r of a world
    #: dividing ``parts`` reads only its streams' shards (open_clip's split by shard), and one process
    #: with the same ``parts`` reads the same batches.
    parts: int = 1
    #: A prompt id per row (see :func:`prompt_groups`), or None: an epoch then reads one image per prompt,
    #: the prompt's rows taken in turn from a seeded offset (a different image, i.e. seed, each epoch);
    #: the order and the split over ranks are those of the rows chosen.
    prompts: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.prompts is not None and len(self.prompts) != self.n:
            raise ConfigError(f"{len(self.prompts)} prompt ids for {self.n} training rows")
        if self.parts > 1 and (not self.groups or self.batch_size % self.parts or len(self.groups) < self.parts):
            raise ConfigError(
                f"shard_parts={self.parts} needs shards, at least as many shards and a batch_size it divides"
            )
        if self.batch_size < self.world * self.accum:
            raise ConfigError(
                f"batch_size {self.batch_size} is smaller than ranks x grad_accum ({self.world} x {self.accum})"
            )
        if self.n < self.batch_size and self.n < self.world * self.accum:
            raise ConfigError(f"{self.n} training pairs cannot fill one batch over {self.world} rank(s)")

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch; a last partial batch too small to split over ranks is dropped (shard
        streams: as many as the shortest stream any shard deal can give fills)."""
        if self.parts > 1:
            shortest = sum(sorted(self._least_per_group())[: len(self.groups) // self.parts])
            return shortest // (self.batch_size // self.parts)
        full, rest = divmod(self.n if self.prompts is None else self._picks[1].size, self.batch_size)
        return full + (1 if rest >= self.world * self.accum else 0)

    @functools.cached_property
    def _picks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows sorted by prompt, each prompt's first position in them, its row count and seeded offset."""
        by_prompt = np.argsort(self.prompts, kind="stable")
        firsts = np.flatnonzero(np.r_[True, np.diff(self.prompts[by_prompt]) != 0])
        counts = np.diff(np.r_[firsts, self.n])
        offsets = np.random.default_rng([self.seed, 2]).integers(0, counts)
        return by_prompt, firsts, counts, offsets

    def chosen(self, epoch: int) -> np.ndarray:
        """The rows epoch ``epoch`` reads: all, or one per prompt (the ``(offset + epoch) % count``-th of its rows)."""
        if self.prompts is None:
            return np.arange(self.n)
        by_prompt, firsts, counts, offsets = self._picks
        return np.sort(by_prompt[firsts + (offsets + epoch) % counts])

    def _least_per_group(self) -> list[int]:
        """Fewest rows any epoch reads from each stream chunk (one per prompt: prompts wholly inside it)."""
        if self.prompts is None:
            return list(self.groups)
        starts = np.cumsum((0, *self.groups))
        chunk = np.searchsorted(starts, np.arange(self.n), side="right") - 1
        least = []
        for c in range(len(self.groups)):
            inside = np.zeros(int(self.prompts.max()) + 1, bool)
            inside[np.unique(self.prompts[chunk == c])] = True
            inside[np.unique(self.prompts[chunk != c])] = False
            least.append(int(inside.sum()))
        return least

    def global_keys(self, step: int) -> np.ndarray:
        """Keys (``epoch * n + row``) of the global batch at ``step``."""
        epoch, b = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[b * self.batch_size : (b + 1) * self.batch_size] + epoch * self.n

    def shard_order(self, epoch: int) -> np.ndarray:
        """The seeded order in which epoch ``epoch`` visits the shards."""
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.groups))

    def order(self, epoch: int) -> np.ndarray:
        """Rows in the order epoch ``epoch`` reads them (a permutation, or shard runs in :meth:`shard_order`)."""
        if not self.groups:
            if self.prompts is None:
                return np.random.default_rng([self.seed, epoch]).permutation(self.n)
            rows = self.chosen(epoch)
            return rows[np.random.default_rng([self.seed, epoch]).permutation(len(rows))]
        starts = np.cumsum((0, *self.groups))
        shards = self.shard_order(epoch)
        read = np.zeros(self.n, bool)
        read[self.chosen(epoch)] = True
        streams = [
            np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards[p :: self.parts]])
            for p in range(self.parts)
        ]
        streams = [stream[read[stream]] for stream in streams]
        if self.parts == 1:
            return streams[0]
        m = self.batch_size // self.parts
        return np.concatenate(
            [stream[b * m : (b + 1) * m] for b in range(self.steps_per_epoch) for stream in streams]
        )

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's micro-batches (key lists) at ``step``."""
        mine = np.array_split(self.global_keys(step), self.world)[self.rank]
        return [m.tolist() for m in np.array_split(mine, self.accum)]

    def epoch_of(self, step: int) -> float:
        """Epochs done after ``step`` steps."""
        return round(step / self.steps_per_epoch, 4)

    def total_steps(self, epochs: int, max_steps: int | None) -> int:
        """``max_steps`` when given, else ``epochs`` full passes."""
        return max_steps if max_steps else epochs * self.steps_per_epoch


class StepSampler:
    """Yield this rank's micro-batches for steps ``start`` .. ``stop`` - 1 (a DataLoader batch_sampler)."""

    def __init__(self, plan: BatchPlan, start: int, stop: int) -> None:
        self.plan, self.start, self.stop = plan, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.plan.accum

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step)

    def __getitem__(self, i: int) -> list[int]:
        """Micro-batch ``i`` (so the sampler is also the order a :class:`Batches` dataset takes)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        step, micro = divmod(i, self.plan.accum)
        return self.plan.micro_batches(self.start + step)[micro]
