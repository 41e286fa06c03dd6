"""The image-set protocol every source implements, and the views built on it (a subset, a concatenation).

A source lists its ids (in order) at opening and hands out raw samples of any rows in the order asked
(:meth:`ImageSet.stream`); decoding is :mod:`.decode`'s, batching :mod:`.batches`'s.
"""

from __future__ import annotations

import abc
import bisect
import copy
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from PIL import Image

from ..errors import BadImageError, TruthError
from .decode import BadSample, decode_image


class Raw(NamedTuple):
    """One sample as stored: id, a name for messages (path, ``shard:key``, ``file:row``), the encoded image
    bytes (None when they cannot be read: ``error`` says why) and the truth prompt (None when absent)."""

    id: str
    name: str
    data: bytes | None
    prompt: str | None
    error: str | None = None


class Sample(NamedTuple):
    """One decoded sample: RGB image, or None with the :class:`BadSample` that says why."""

    id: str
    image: Image.Image | None
    prompt: str | None
    error: BadSample | None = None


def decode_raw(row: int, raw: Raw) -> Image.Image | BadSample:
    """Decode a raw sample; a fault becomes a :class:`BadSample` instead of an exception."""
    if raw.data is None:
        return BadSample(row, raw.id, raw.name, raw.error or "no image bytes")
    try:
        return decode_image(raw.data, raw.name)
    except BadImageError as e:
        return BadSample(row, raw.id, raw.name, e.reason)


def part_index(rank: int = 0, world_size: int = 1, split_workers: bool = True) -> tuple[int, int]:
    """This reader's part and the number of parts: ``rank * workers + worker`` of ``world_size * workers``
    (workers of the current ``torch.utils.data`` DataLoader; none outside one)."""
    worker, workers = 0, 1
    if split_workers:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            worker, workers = info.id, info.num_workers
    return rank * workers + worker, world_size * workers


class ImageSet(abc.ABC):
    """An ordered set of images with ids, a content fingerprint and, when known, the truth prompts.

    ``skipped`` lists ``(id or shard, reason)`` of what ``--skip-bad`` left out; ``groups`` holds the rows
    per chunk that is read as one stream (the shards of a shard set, a Parquet's row groups; empty when
    any row reads alone): readers that visit rows chunk by chunk read each chunk once.
    """

    root: str
    ids: list[str]
    prompts: dict[str, str] | None
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def groups(self) -> tuple[int, ...]:
        return ()

    @abc.abstractmethod
    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        """Raw samples of ``rows``, in that order (a streamed source reads forward within a chunk)."""

    @abc.abstractmethod
    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        """``(tag, one digest per row of rows)`` (all rows when None), hashed by :meth:`fingerprint`; ``fast``
        may use file stats."""

    def fingerprint(self, fast: bool = False) -> str:
        """Hash of ids and image contents: the cache key's image part (the same images give the same value
        from every source; ``fast`` folders hash sizes + mtimes)."""
        tag, digests = self.digests(fast)
        h = hashlib.sha256(tag)
        for id_, digest in zip(self.ids, digests):
            h.update(id_.encode() + b"\0")
            h.update(digest)
        return h.hexdigest()[:16]

    def prompt_list(self) -> list[str]:
        """Truth prompts in id order; raise :class:`TruthError` if the set has none or any id lacks one."""
        if self.prompts is None:
            raise TruthError(f"{self.root} has no truth prompts")
        missing = [i for i in self.ids if i not in self.prompts]
        if missing:
            raise TruthError(f"{self.root}: {len(missing)} image ids have no prompt, e.g. {missing[:3]}")
        return [self.prompts[i] for i in self.ids]

    def samples(self, start: int = 0, stop: int | None = None, *, rank: int = 0, world_size: int = 1,
                split_workers: bool = True) -> Iterator[Sample]:
        """Decoded samples of rows ``start:stop`` in this reader's part (:func:`part_index`: by chunk when
        the set has ``groups``, else by row); a bad image is a :class:`Sample` with ``error`` set."""
        part, parts = part_index(rank, world_size, split_workers)
        stop = len(self) if stop is None else min(stop, len(self))
        chunk = _chunk_of(self.groups)
        rows = [r for r in range(start, stop) if chunk(r) % parts == part]
        for row, raw in zip(rows, self.stream(rows)):
            image = decode_raw(row, raw)
            bad = isinstance(image, BadSample)
            yield Sample(raw.id, None if bad else image, raw.prompt, image if bad else None)

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` to RGB; a bad image raises :class:`BadImageError`."""
        image = decode_raw(i, next(self.stream([i])))
        if isinstance(image, BadSample):
            raise image.error()
        return image

    def subset(self, rows: Sequence[int], skipped: Iterable[tuple[str, str]] = ()) -> ImageSet:
        """The rows ``rows`` of this set as a set (``skipped`` adds to what it records as left out)."""
        return Subset(self, rows, [*self.skipped, *skipped])

    def with_prompts(self, prompts: dict[str, str]) -> ImageSet:
        """A copy with these truth prompts."""
        out = copy.copy(self)
        out.prompts = dict(prompts)
        return out


def _chunk_of(groups: Sequence[int]):
    """Row -> chunk index for ``groups`` (each row is its own chunk when there are none)."""
    if not groups:
        return lambda row: row
    ends = list(itertools.accumulate(groups))
    return lambda row: bisect.bisect_right(ends, row)


class Subset(ImageSet):
    """Some rows of a set, in a given order (what ``--skip-bad`` keeps; the first rows of a benchmark)."""

    def __init__(self, parent: ImageSet, rows: Sequence[int], skipped: list[tuple[str, str]]) -> None:
        self.parent, self.rows = parent, list(rows)
        self.root, self.prompts, self.skipped = parent.root, parent.prompts, skipped
        self.ids = [parent.ids[r] for r in self.rows]

    @property
    def groups(self) -> tuple[int, ...]:
        if not self.parent.groups:
            return ()
        chunk = _chunk_of(self.parent.groups)
        return tuple(len(list(g)) for _, g in itertools.groupby(self.rows, chunk))

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        return self.parent.stream(self.rows[r] for r in rows)

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        return self.parent.digests(fast, self.rows if rows is None else [self.rows[r] for r in rows])


class Concat(ImageSet):
    """Sets one after the other (training rows, then a separate validation set). Rows are positional: ids
    may repeat across the parts, and then the concatenation has no truth of its own (each part keeps its)."""

    def __init__(self, parts: Sequence[ImageSet]) -> None:
        self.parts = list(parts)
        self.root = " + ".join(str(p.root) for p in self.parts)
        self.ids = [i for p in self.parts for i in p.ids]
        with_truth = [p.prompts for p in self.parts if p.prompts is not None]
        unique = len(set(self.ids)) == len(self.ids)
        self.prompts = {k: v for d in with_truth for k, v in d.items()} if with_truth and unique else None
        self.skipped = [s for p in self.parts for s in p.skipped]
        self._ends = list(itertools.accumulate(len(p) for p in self.parts))

    @property
    def groups(self) -> tuple[int, ...]:
        """The parts' chunks when every part has them, else none."""
        return tuple(g for p in self.parts for g in p.groups) if all(p.groups for p in self.parts) else ()

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        def part(row: int) -> int:
            return bisect.bisect_right(self._ends, row)

        for p, run in itertools.groupby(rows, part):
            first = self._ends[p] - len(self.parts[p])
            yield from self.parts[p].stream(r - first for r in run)

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        pairs = [p.digests(fast) for p in self.parts]
        every = [d for _, ds in pairs for d in ds]
        return b"+".join(t for t, _ in pairs), every if rows is None else [every[r] for r in rows]
