"""Paired data: image-prompt pairs, their cached CLIP features and MiniLM targets, and the batch order.

The batch order is a pure function of (seed, number of pairs, global batch, step), so a resumed or
data-parallel run reads the same rows at the same step: :class:`BatchPlan` splits each global batch
over ranks and gradient-accumulation micro-batches, and a row's *key* (``epoch * n + row``) seeds
its augmentation, so decoding in any worker of any process gives the same pixels. Fine-tuning can
stream a WebDataset shard set (:class:`ShardBatches`): an epoch then visits the shards in a seeded
order, each shard's rows in stream order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptblend import atomic
from promptblend.errors import (
    ConfigError,
    ImageSetError,
    ModelNotFoundError,
    TruthError,
)
from promptblend.images import ImageSet, load_image, open_image_set, read_prompts_csv
from promptblend.text import encode

Images = ImageSet | str | Path | Sequence[str | Path]
Prompts = str | Path | dict[str, str] | Sequence[str] | None


@dataclass
class PairData:
    """Image-prompt pairs reduced to what training needs: image paths, CLIP features, MiniLM targets.

    ``features`` is None when the tower itself trains (fine-tuning reads pixels); ``val_start`` is
    the first row of a separate validation set appended to the training rows (None: split by fraction).
    """

    ids: list[str]
    prompts: list[str]
    paths: list[Path]
    features: np.ndarray | None  # float32 (N, clip_dim), unit rows
    targets: np.ndarray  # float32 (N, 384), unit rows
    clip: tuple[str, str | None]
    val_start: int | None = None
    shards: Any = None  # a ShardSet whose rows are the first len(shards) pairs (streamed, no paths)

    def __len__(self) -> int:
        return len(self.ids)


def resolve_pairs(images: Images, prompts: Prompts = None) -> tuple[ImageSet, list[str]]:
    """Turn images (a set, a folder or file paths) and prompts (a CSV, an id->prompt dict, a list
    aligned with the images, or None for the set's own ``prompts.csv``) into aligned pairs."""
    if isinstance(images, ImageSet):
        image_set = images
    elif isinstance(images, (str, Path)):
        image_set = open_image_set(images)
    else:
        paths = [Path(p) for p in images]
        missing = [str(p) for p in paths if not p.is_file()]
        if not paths or missing:
            raise ImageSetError(f"image files not found: {missing[:3]}" if missing else "no images given")
        image_set = ImageSet(paths[0].parent, [p.stem for p in paths], paths)
    if not hasattr(image_set, "paths"):  # WebDataset shards carry their prompts as .txt members
        if prompts is not None:
            raise ConfigError(f"{images}: a shard set brings its own prompts (.txt); do not pass prompts")
        return image_set, image_set.prompt_list()
    if prompts is None:
        return image_set, image_set.prompt_list()
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts_csv(prompts)
    if isinstance(prompts, dict):
        image_set = dataclasses.replace(image_set, prompts=dict(prompts))
        return image_set, image_set.prompt_list()
    prompts = [str(p) for p in prompts]
    if len(prompts) != len(image_set):
        raise TruthError(f"{len(prompts)} prompts for {len(image_set)} images")
    if any(not p.strip() for p in prompts):
        raise TruthError("empty prompt in the prompt list")
    return image_set, prompts


class ImageFiles:
    """Decode + transform images in DataLoader workers (row ``i`` of ``paths``)."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i]))


class ImagePairs:
    """Keyed image -> (pixels, target) pairs: key ``epoch * n + row``; ``augment`` (a transform) is seeded by the key."""

    keyed = True

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, transform, augment=None, seed: int = 0) -> None:
        self.paths, self.targets = list(paths), targets
        self.transform, self.augment, self.seed = transform, augment, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int):
        import torch

        row = int(key) % len(self.paths)
        pixels = seeded_pixels(load_image(self.paths[row]), key, self.transform, self.augment, self.seed)
        return pixels, torch.from_numpy(self.targets[row])


def seeded_pixels(image, key: int, transform, augment, seed: int):
    """``transform(image)``, or ``augment(image)`` with torch's RNG seeded by (``seed``, ``key``)."""
    import torch

    if augment is None:
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + int(key))
        return augment(image)


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
    import torch
    from tqdm.auto import tqdm

    from promptblend.cache import cache_dir
    from promptblend.clip import embed_images, load_clip

    key = hashlib.sha256(f"{clip_key(clip)}:{image_set.fingerprint(fast=True)}".encode()).hexdigest()[:24]
    path = cache_dir() / "clip-features" / f"{key}.npy"
    if path.is_file():
        feats = atomic.load_npy(path)
        if feats.shape[0] == len(image_set):
            return feats
    bundle = load_clip(clip[0], clip[1], device)
    if hasattr(image_set, "paths"):
        loader = torch.utils.data.DataLoader(
            ImageFiles(image_set.paths, bundle.preprocess), batch_size=batch_size, num_workers=num_workers
        )
    else:  # WebDataset shards: streamed once in row order, nothing unpacked
        loader = _streamed_batches(image_set, bundle.preprocess, batch_size)
    total = -(-len(image_set) // batch_size)
    out = [embed_images(bundle, x) for x in tqdm(loader, desc="clip features", unit="batch", total=total,
                                                  disable=not progress)]
    feats = np.concatenate(out).astype(np.float32)
    atomic.save_npy(path, feats)
    return feats


def _streamed_batches(image_set, transform, batch_size: int):
    """Transformed pixel batches of a shard set in row order."""
    import torch

    batch = []
    for _, image in image_set.samples(0, None, split_workers=False):
        batch.append(transform(image))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


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
    # the frozen-feature head streams shards once for their CLIP features; fine-tuning streams pixels each epoch
    shards = None if features or hasattr(sets[0][0], "paths") else sets[0][0]
    if shards is not None and (val_images is None or not hasattr(sets[1][0], "paths")):
        raise ConfigError("fine-tuning from shards streams pixels: give a folder --val set")
    ids, texts, paths, feats = [], [], [], []
    for image_set, set_texts in sets:
        ids += list(image_set.ids)
        texts += set_texts
        paths += list(getattr(image_set, "paths", [None] * len(image_set)))
        if features:
            feats.append(clip_image_features(image_set, clip, device, num_workers=num_workers, progress=progress))
    val_start = len(sets[0][0]) if val_images is not None else None
    return PairData(
        ids, texts, paths, np.concatenate(feats) if features else None, prompt_targets(texts), (clip[0], clip[1]),
        val_start, shards,
    )


def split_indices(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / held-out split of ``n`` pairs (at least one held out when ``val_frac`` > 0)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = 0 if val_frac <= 0 else max(1, int(round(n * val_frac)))
    if n - n_val < 1:
        raise ConfigError(f"{n} pairs leave nothing to train on with val_frac={val_frac}")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def data_split(data: PairData, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: the appended validation set, else a seeded fraction."""
    if data.val_start is not None:
        return np.arange(data.val_start), np.arange(data.val_start, len(data))
    return split_indices(len(data), val_frac, seed)


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

    def __post_init__(self) -> None:
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
            shortest = sum(sorted(self.groups)[: len(self.groups) // self.parts])
            return shortest // (self.batch_size // self.parts)
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world * self.accum else 0)

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
            return np.random.default_rng([self.seed, epoch]).permutation(self.n)
        starts = np.cumsum((0, *self.groups))
        shards = self.shard_order(epoch)
        streams = [
            np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards[p :: self.parts]])
            for p in range(self.parts)
        ]
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



class ShardBatches(torch.utils.data.IterableDataset):
    """This rank's micro-batches for steps ``start`` .. ``stop`` - 1, streamed from a shard set in the
    plan's shard order (an iterable dataset yielding collated ``(pixels, targets)``).

    Every rank streams the shards it needs but decodes only its own rows; DataLoader workers take
    micro-batches in turn (worker ``w`` decodes every ``w``-th), which the loader's in-order round robin
    puts back in sequence, so the batches equal the one-worker, one-process ones.
    """

    def __init__(self, shards, plan: BatchPlan, start: int, stop: int, targets: np.ndarray, transform,
                 augment=None, seed: int = 0) -> None:
        self.shards, self.plan, self.start, self.stop = shards, plan, start, stop
        self.targets, self.transform, self.augment, self.seed = targets, transform, augment, seed

    def __iter__(self):
        from torch.utils.data import get_worker_info

        from promptblend.images import decode_image

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        micro = [m for step in range(self.start, self.stop) for m in self.plan.micro_batches(step)]
        mine = [keys for i, keys in enumerate(micro) if i % workers == worker]
        where = {k: (i, j) for i, keys in enumerate(mine) for j, k in enumerate(keys)}
        done: dict[int, dict[int, Any]] = {}
        for key, data, name in self._stream(where):
            i, j = where[key]
            done.setdefault(i, {})[j] = seeded_pixels(decode_image(data, name), key, self.transform, self.augment, self.seed)
            if len(done[i]) == len(mine[i]):
                items = done.pop(i)
                rows = [k % self.plan.n for k in mine[i]]
                yield torch.stack([items[j] for j in range(len(rows))]), torch.from_numpy(self.targets[rows])

    def _stream(self, keys):
        """``(key, image bytes, name)`` of ``keys`` in stream order (shards without a wanted row are not read)."""
        n = self.plan.n
        starts = np.cumsum((0, *self.plan.groups))
        for epoch in sorted({k // n for k in keys}):
            rows = {k - epoch * n for k in keys if k // n == epoch}
            for s in self.plan.shard_order(epoch):
                first, last = int(starts[s]), int(starts[s + 1])
                if any(first <= r < last for r in rows):
                    for row, _, name, data, _ in self.shards.raw(first, last, split_workers=False):
                        if row in rows:
                            yield epoch * n + row, data, name
