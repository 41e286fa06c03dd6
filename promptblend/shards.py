"""Image sets as WebDataset tar shards in img2dataset's layout (``KEY.png|jpg``, ``KEY.txt`` prompt,
``KEY.json`` metadata), read streaming with the ``webdataset`` library: id = key, truth = ``.txt``.

A source is a folder of ``*.tar`` (what ``experiments.generate`` writes), a brace pattern
(``sets/val-{000000..000031}.tar``), one tar path, URL or ``pipe:`` command, or a list of those.
Opening a set streams it once to list and check its keys and hash its images; iteration streams again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ShardError, TruthError
from .images import IMAGE_EXTENSIONS, decode_image, part_index

#: Member suffixes read as the image, in order of preference.
IMAGE_SUFFIXES = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_DUPLICATE = re.compile(r"([^\s'\"(/]+?)\.[^\s'\"(/]*: duplicate file name")
REMOTE_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://")

def shard_urls(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The shard list of ``source`` (brace patterns expanded, a folder's ``*.tar`` sorted); local tars must exist."""
    from webdataset.shardlists import expand_urls

    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    urls: list[str] = []
    for item in items:
        text = os.fspath(item)
        if not text.startswith(REMOTE_PREFIXES) and Path(text).is_dir():
            urls.extend(str(p) for p in sorted(Path(text).glob("*.tar")) if not p.name.startswith("."))
        else:
            urls.extend(expand_urls(text))
    if not urls:
        raise ShardError(str(source), None, "no .tar shards found")
    for url in urls:
        if not url.startswith(REMOTE_PREFIXES) and not Path(url).is_file():
            raise ShardError(url, None, "shard not found")
    return urls


def is_shard_source(source: Any) -> bool:
    """Whether ``source`` names shards (a tar, a pattern, a list, a URL, or a folder holding ``*.tar``)."""
    if isinstance(source, (list, tuple)):
        return True
    text = os.fspath(source)
    if text.startswith(REMOTE_PREFIXES) or text.endswith(".tar") or "{" in text:
        return True
    return Path(text).is_dir() and any(Path(text).glob("*.tar"))


def _members(url: str) -> Iterator[dict]:
    """Raw samples (``__key__`` plus member bytes by suffix) of one shard; stream faults become :class:`ShardError`."""
    import webdataset as wds

    pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(handler=wds.reraise_exception))
    last = None
    try:
        for sample in pipeline:
            last = sample["__key__"]
            yield sample
    except ShardError:
        raise
    except FileNotFoundError as e:
        raise ShardError(url, None, f"shard not found ({e})") from e
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(url, last, f"truncated or corrupt tar after this key ({type(e).__name__}: {e})") from e
    except ValueError as e:  # webdataset: "NAME.EXT: duplicate file name in tar file ..." inside one sample
        found = _DUPLICATE.search(str(e))
        key = found.group(1) if found else last
        raise ShardError(url, key, "duplicate key (a member repeated within the shard)") from e


def _image_member(url: str, sample: dict) -> tuple[str, bytes]:
    """The image suffix and bytes of a sample; a key without one raises :class:`ShardError`."""
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            return suffix, sample[suffix]
    have = sorted(k for k in sample if not k.startswith("__"))
    raise ShardError(url, sample["__key__"], f"no image ({'/'.join(IMAGE_SUFFIXES)}); members: {have}")


def _text_member(url: str, sample: dict) -> str | None:
    """The sample's ``.txt`` as text (None when absent); non-UTF-8 raises :class:`ShardError`."""
    if "txt" not in sample:
        return None
    try:
        return sample["txt"].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ShardError(url, sample["__key__"], f"text is not UTF-8 ({e})") from e


@dataclass
class ShardSet:
    """A checked shard set: ids (keys) in stream order, per-shard counts, image digests and ``.txt`` prompts."""

    root: str
    shards: list[str]
    counts: list[int]
    ids: list[str]
    digests: list[bytes]
    prompts: dict[str, str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self, fast: bool = False) -> str:
        """Hash of ids and image bytes, equal to the same images' folder fingerprint (``fast`` changes nothing)."""
        h = hashlib.sha256(b"content")
        for id_, digest in zip(self.ids, self.digests):
            h.update(id_.encode() + b"\0")
            h.update(digest)
        return h.hexdigest()[:16]

    def prompt_list(self) -> list[str]:
        """Truth prompts (the ``.txt`` members) in id order."""
        if self.prompts is None:
            raise TruthError(f"{self.root} has no .txt prompts")
        return [self.prompts[i] for i in self.ids]

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` (streams its shard up to it: use :meth:`samples` for many)."""
        return next(self.samples(i, i + 1, split_workers=False))[1]

    def raw(self, start: int = 0, stop: int | None = None, *, rank: int = 0, world_size: int = 1,
            split_workers: bool = True) -> Iterator[tuple[int, str, str, bytes, str | None]]:
        """Stream ``(row, id, name, image bytes, prompt)`` for rows ``start:stop`` of this part's shards, undecoded."""
        stop = len(self.ids) if stop is None else min(stop, len(self.ids))
        part, parts = part_index(rank, world_size, split_workers)
        offset = 0
        for s, (url, count) in enumerate(zip(self.shards, self.counts)):
            first, offset = offset, offset + count
            if s % parts == part and offset > start and first < stop:
                yield from self._shard_rows(url, first, max(start, first), min(stop, offset))

    def _shard_rows(self, url: str, first: int, start: int, stop: int) -> Iterator[tuple]:
        """Rows ``start:stop`` of the shard whose first row is ``first``, checked against the ids seen at opening."""
        row = first - 1
        for row, sample in enumerate(_members(url), first):
            if row >= stop:
                return
            if sample["__key__"] != self.ids[row]:
                raise ShardError(url, sample["__key__"], f"shard changed since the set was opened "
                                                         f"(row {row} was key {self.ids[row]!r})")
            if row >= start:
                _, data = _image_member(url, sample)
                yield row, sample["__key__"], f"{url}:{sample['__key__']}", data, _text_member(url, sample)
        if row + 1 < stop:
            raise ShardError(url, None, f"shard changed since the set was opened (ends at row {row}, expected {stop - 1})")

    def samples(self, start: int = 0, stop: int | None = None, *, rank: int = 0, world_size: int = 1,
                split_workers: bool = True, with_prompt: bool = False) -> Iterator[tuple]:
        """Stream ``(id, RGB image)`` (``(id, image, prompt)`` with ``with_prompt``); see :func:`part_index` for splits."""
        for _, id_, name, data, prompt in self.raw(start, stop, rank=rank, world_size=world_size,
                                                   split_workers=split_workers):
            image = decode_image(data, name)
            yield (id_, image, prompt) if with_prompt else (id_, image)


def open_shard_set(source: str | os.PathLike | Sequence[str | os.PathLike]) -> ShardSet:
    """Stream every shard once, checking keys (image present, text UTF-8 and on all keys or none, no repeats)."""
    urls = shard_urls(source)
    ids: list[str] = []
    digests: list[bytes] = []
    counts: list[int] = []
    texts: dict[str, str] = {}
    where: dict[str, str] = {}
    for url in urls:
        n = 0
        for sample in _members(url):
            key = sample["__key__"]
            if key in where:
                raise ShardError(url, key, f"duplicate key (also in {where[key]})")
            where[key] = url
            _, data = _image_member(url, sample)
            text = _text_member(url, sample)
            if (text is None) != (not texts) and ids:
                culprit = key if text is None else ids[0]
                raise ShardError(where[culprit], culprit, "no text (.txt) while other keys have one")
            if text is not None:
                texts[key] = text
            ids.append(key)
            digests.append(hashlib.sha256(data).digest())
            n += 1
        counts.append(n)
    if not ids:
        raise ShardError(str(source), None, "the shards hold no samples")
    root = source if isinstance(source, (str, os.PathLike)) else urls[0]
    return ShardSet(os.fspath(root), urls, counts, ids, digests, texts or None)


def shard_name(prefix: str, index: int) -> str:
    """File name of shard ``index``: ``{prefix}-{index:06d}.tar`` (the brace pattern is ``{prefix}-{000000..N}.tar``)."""
    return f"{prefix}-{index:06d}.tar"


def write_shard(path: str | os.PathLike, samples: Sequence[dict]) -> Path:
    """Write one tar shard atomically (fixed mtime: the same samples give the same bytes); each sample is
    ``{"__key__": ..., "png": bytes, "txt": str, "json": dict}``."""
    import webdataset as wds

    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path, ".tar") as tmp, wds.TarWriter(str(tmp), mtime=0.0) as sink:
        for sample in samples:
            sink.write(sample)
    return path
