"""The one torch dataset over any image set: batches in an order the caller hands in, decoded and
prepared in DataLoader workers.

The order is a sequence of key lists, one per batch (PyTorch's Dataset/Sampler split): the runner hands
in row ranges, the trainers their resumable plan (keys ``epoch * n + row``). Worker ``w`` of ``W`` makes
batches ``w, w + W, ...`` and the DataLoader's in-order round robin puts them back in sequence, so the
batches equal the one-worker ones. A worker reads its rows through :meth:`ImageSet.stream` in the order
asked (a shard or row group is read forward once per run of rows in it). A sample that fails to decode
makes its batch a :class:`BadBatch` instead of an exception (exceptions lose their fields there).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ImageSetError
from .base import ImageSet, decode_raw
from .decode import BadSample

log = logging.getLogger(__name__)


@dataclass
class BadBatch:
    """A batch with samples that failed to decode (its keys and the bad samples)."""

    keys: list[int]
    bad: list[BadSample]


def keys_and_items(keys: list[int], items: list[Any]) -> tuple[list[int], list[Any]]:
    """The default batch: its keys and the prepared items, collated later by the caller."""
    return keys, items


def no_collate(batch: Any) -> Any:
    """A DataLoader ``collate_fn`` that hands the worker's batch over as it is."""
    return batch


def row_batches(start: int, stop: int, batch_size: int) -> list[list[int]]:
    """Rows ``start:stop`` cut into batches of ``batch_size`` (the runner's order)."""
    return [list(range(s, min(s + batch_size, stop))) for s in range(start, stop, max(1, batch_size))]


class Batches(IterableDataset):
    """Batches of ``image_set``: for each key list of ``order``, ``collate(keys, [prepare(image, key)...])``.

    ``rows`` maps a key to an image-set row as ``rows[key % len(rows)]`` (default: ``key % len(image_set)``).
    ``prepare`` None reads nothing: the items are the rows (for predictors that never read pixels).
    Use with ``DataLoader(batches, batch_size=None, collate_fn=no_collate, num_workers=W)``.
    """

    def __init__(self, image_set: ImageSet, order: Sequence[Sequence[int]], prepare: Callable | None,
                 rows: Sequence[int] | None = None, collate: Callable = keys_and_items) -> None:
        super().__init__()
        self.image_set, self.order, self.prepare, self.collate = image_set, order, prepare, collate
        self.rows = list(range(len(image_set))) if rows is None else list(rows)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        n = len(self.rows)
        mine = (list(map(int, self.order[b])) for b in range(worker, len(self.order), workers))  # lazy: plans are long
        if self.prepare is None:
            for keys in mine:
                yield self.collate(keys, [self.rows[k % n] for k in keys])
            return
        batches, ahead = itertools.tee(mine)
        raws = self.image_set.stream(self.rows[k % n] for keys in ahead for k in keys)
        for keys in batches:
            items, bad = [], []
            for key in keys:
                row = self.rows[key % n]
                image = decode_raw(row, next(raws))
                if isinstance(image, BadSample):
                    bad.append(image)
                else:
                    items.append(self.prepare(image, key))
            yield BadBatch(keys, bad) if bad else self.collate(keys, items)


def check_image(image: Any, key: int) -> None:
    """A ``prepare`` that only decodes (used to find bad samples)."""


def find_bad(image_set: ImageSet, workers: int = 0, batch_size: int = 64) -> list[BadSample]:
    """Every sample of ``image_set`` that fails to read or decode, decoding in ``workers`` DataLoader workers."""
    from torch.utils.data import DataLoader

    data = Batches(image_set, row_batches(0, len(image_set), batch_size), check_image)
    loader = DataLoader(data, batch_size=None, collate_fn=no_collate, num_workers=workers)
    return [b for batch in loader if isinstance(batch, BadBatch) for b in batch.bad]


def drop_bad(image_set: ImageSet, workers: int = 0) -> ImageSet:
    """``image_set`` without the samples that fail to decode (the one place ``--skip-bad`` applies): the
    same ids from every source, recorded in ``skipped`` as ``(id, reason)`` and counted in one warning."""
    bad = find_bad(image_set, workers)
    if not bad:
        return image_set
    log.warning("skipping %d bad image(s) of %s, e.g. %s: %s", len(bad), image_set.root, bad[0].name, bad[0].reason)
    gone = {b.row for b in bad}
    keep = [r for r in range(len(image_set)) if r not in gone]
    if not keep:
        raise ImageSetError(f"every image in {image_set.root} is bad")
    return image_set.subset(keep, [(b.id, b.reason) for b in bad])
