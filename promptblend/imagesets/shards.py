"""WebDataset tar shards in img2dataset's layout (``KEY.png|jpg|webp``, ``KEY.txt`` prompt, ``KEY.json``),
read with the ``webdataset`` library: id = key, truth = ``.txt``.

A source is a folder of ``*.tar`` (what ``experiments.generate`` writes), a brace pattern
(``sets/val-{000000..000031}.tar``), one tar path, URL or ``pipe:`` command, or a list of those. Opening
streams every shard once to list and check its keys and hash its images, and checks the counts against
``sizes.json`` beside the shards when there is one (an empty, short or truncated shard is a named error,
or, with ``skip_bad``, left out and recorded).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ShardError
from .base import ImageSet, Raw
from .decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

#: Member suffixes read as the image, in order of preference.
IMAGE_SUFFIXES = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
#: The declared sample count per shard file name (open_clip's and img2dataset's convention).
SIZES_JSON = "sizes.json"
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


def claims(source: Any) -> bool:
    """Whether ``source`` names shards (a tar, a pattern, a list of them, a URL, or a folder holding ``*.tar``)."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(claims(s) for s in source)
    text = os.fspath(source)
    if text.startswith(REMOTE_PREFIXES) or text.endswith(".tar") or "{" in text:
        return True
    return Path(text).is_dir() and any(Path(text).glob("*.tar"))


class TruncatedShardError(ShardError):
    """A shard whose stream ends early (a truncated or corrupt tar): what ``skip_bad`` may cut off."""


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
        where = "after this key" if last is not None else "before its first sample"
        raise TruncatedShardError(url, last, f"truncated or corrupt tar {where} ({type(e).__name__}: {e})") from e
    except ValueError as e:  # webdataset: "NAME.EXT: duplicate file name in tar file ..." inside one sample
        found = _DUPLICATE.search(str(e))
        key = found.group(1) if found else last
        raise ShardError(url, key, "duplicate key (a member repeated within the shard)") from e


def _image_member(url: str, sample: dict) -> bytes:
    """The sample's image bytes; a key without one raises :class:`ShardError`."""
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            return sample[suffix]
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


class ShardSet(ImageSet):
    """A checked shard set: ids (keys) in stream order, per-shard counts, image digests and ``.txt`` prompts."""

    def __init__(self, root: str, shards: list[str], counts: list[int], ids: list[str], digests: list[bytes],
                 prompts: dict[str, str] | None, skipped: list[tuple[str, str]]) -> None:
        self.root, self.shards, self.counts, self.ids = root, shards, counts, ids
        self._digests, self.prompts, self.skipped = digests, prompts, skipped
        self._ends = list(itertools.accumulate(counts))

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(c for c in self.counts if c)

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        """Image-byte digests (the same as the same files' in a folder; ``fast`` changes nothing)."""
        return b"content", self._digests if rows is None else [self._digests[r] for r in rows]

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        """Rows in the order asked: forward within a shard reads on; anything else reopens the shard."""
        shard, pos, members = -1, 0, iter(())
        for row in rows:
            s = bisect.bisect_right(self._ends, row)
            offset = row - (self._ends[s] - self.counts[s])
            if s != shard or offset < pos:
                shard, pos, members = s, 0, _members(self.shards[s])
            url, first = self.shards[s], row - offset
            for sample in members:
                if sample["__key__"] != self.ids[first + pos]:
                    raise ShardError(url, sample["__key__"], "shard changed since the set was opened (row "
                                                             f"{first + pos} was key {self.ids[first + pos]!r})")
                pos += 1
                if pos > offset:
                    break
            else:
                raise ShardError(url, None, f"shard changed since the set was opened (ends before row {row})")
            yield Raw(sample["__key__"], f"{url}:{sample['__key__']}", _image_member(url, sample),
                      _text_member(url, sample))


def _declared_sizes(urls: list[str]) -> dict[str, int]:
    """``{shard file name: count}`` from the ``sizes.json`` beside the (local) shards, if any."""
    sizes: dict[str, int] = {}
    for folder in sorted({Path(u).parent for u in urls if not u.startswith(REMOTE_PREFIXES)}):
        path = folder / SIZES_JSON
        if path.is_file():
            try:
                sizes.update({str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()})
            except (ValueError, AttributeError, TypeError) as e:
                raise ShardError(str(path), None, f"unreadable {SIZES_JSON} ({e})") from e
    return sizes


def open_shard_set(source: str | os.PathLike | Sequence[str | os.PathLike], skip_bad: bool = False) -> ShardSet:
    """Stream every shard once, checking keys (image present, text UTF-8 and on all keys or none, no repeats)
    and counts (a shard with no samples, fewer than ``sizes.json`` declares, or cut short: a
    :class:`ShardError`, or with ``skip_bad`` a warning and an entry in ``skipped``)."""
    urls = shard_urls(source)
    declared = _declared_sizes(urls)
    ids: list[str] = []
    digests: list[bytes] = []
    counts: list[int] = []
    texts: dict[str, str] = {}
    where: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    for url in urls:
        n, fault = 0, None
        try:
            for sample in _members(url):
                key = sample["__key__"]
                if key in where:
                    raise ShardError(url, key, f"duplicate key (also in {where[key]})")
                where[key] = url
                data = _image_member(url, sample)
                text = _text_member(url, sample)
                if (text is None) != (not texts) and ids:
                    culprit = key if text is None else ids[0]
                    raise ShardError(where[culprit], culprit, "no text (.txt) while other keys have one")
                if text is not None:
                    texts[key] = text
                ids.append(key)
                digests.append(hashlib.sha256(data).digest())
                n += 1
        except TruncatedShardError as e:  # a cut-off stream may be skipped; a malformed key may not
            if not skip_bad:
                raise
            fault = e
        want = declared.get(Path(url).name)
        if fault is None and want is not None and n != want:
            fault = ShardError(url, None, f"holds {n} samples, {SIZES_JSON} declares {want}")
        elif fault is None and n == 0:
            fault = ShardError(url, None, "holds no samples (an empty tar)")
        if fault is not None:
            if not skip_bad:
                raise fault
            log.warning("skipping the rest of %s (%d samples kept)", fault, n)
            skipped.append((Path(url).name, f"{fault.reason}; {n} samples kept"))
        counts.append(n)
    if not ids:
        raise ShardError(str(source), None, "the shards hold no samples")
    root = source if isinstance(source, (str, os.PathLike)) else urls[0]
    return ShardSet(os.fspath(root), urls, counts, ids, digests, texts or None, skipped)


def shard_name(prefix: str, index: int) -> str:
    """File name of shard ``index``: ``{prefix}-{index:06d}.tar`` (the brace pattern is ``{prefix}-{000000..N}.tar``)."""
    return f"{prefix}-{index:06d}.tar"


def write_shard(path: str | os.PathLike, samples: Sequence[dict]) -> Path:
    """Write one tar shard atomically (fixed mtime: the same samples give the same bytes); each sample is
    ``{"__key__": ..., "png": bytes, "txt": str, "json": dict}``."""
    import webdataset as wds

    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path, ".tar") as tmp, wds.TarWriter(str(tmp), mtime=0.0) as sink:
        for sample in samples:
            sink.write(sample)
    return path
