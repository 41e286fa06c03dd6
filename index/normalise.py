"""Prompt clean-up (whitespace, stray backticks/quotes, trailing seeds and ``--`` flags) and
streaming exact deduplication (case-insensitive, by 8-byte digests)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

_WS = re.compile(r"\s+")
_QUOTES = "\"'`“”‘’«»"
_KNOWN_FLAGS = (
    "seed|steps|height|width|scale|cfg|ar|aspect|quality|q|stylize|iterations|sampler|samples|n_samples|"
    "no|upbeta|uplight|test|testp|hd|version|v|niji|chaos|stop|tile|video|n|w|h|s|c"
)
# A double dash / em dash / en dash flag: a known option name, or any name followed by a number.
_DASH_FLAG = re.compile(
    rf"(?:--|—|–)\s?(?:(?:{_KNOWN_FLAGS})\b|[A-Za-z_]+\s*[=:]?\s*\d)", re.IGNORECASE
)
# A single-hyphen CLI flag after a space, followed by a number: ``-s50``, ``-W 512``, ``- s 392``.
_HYPHEN_FLAG = re.compile(r"\s-\s?[A-Za-z]{1,2}\s*[=:]?\s*\d")
_SEED = re.compile(r"(?:\bseed\s*[=:]?\s*)?\b\d{6,}\s*$", re.IGNORECASE)
_EDGE_JUNK = " \t,;:|/\\-–—_*~"


def normalise_prompt(text: str) -> str:
    """Cleaned prompt text ('' when nothing is left)."""
    text = _WS.sub(" ", text.replace("`", " ")).strip()
    for rx in (_DASH_FLAG, _HYPHEN_FLAG):
        m = rx.search(text)
        if m:
            text = text[: m.start()]
    previous = None
    while text != previous:
        previous = text
        text = _SEED.sub("", text).strip(_EDGE_JUNK)
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        text = text.strip(_EDGE_JUNK + _QUOTES)
    return _WS.sub(" ", text)


def dedup_key(text: str) -> bytes:
    """Digest that equal prompts (ignoring case) share."""
    return hashlib.blake2b(text.casefold().encode("utf-8"), digest_size=8).digest()


@dataclass
class CleanStats:
    """Counts from :func:`clean_unique`, per source and in total."""

    read: int = 0
    empty: int = 0
    duplicates: int = 0
    kept: int = 0
    per_source: dict[int, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-able form for the manifest."""
        return {"read": self.read, "empty": self.empty, "exact_duplicates": self.duplicates, "kept": self.kept}


def clean_unique(records: Iterable[tuple[int, str]], stats: CleanStats) -> Iterator[str]:
    """Normalise each ``(source, text)`` and yield each distinct prompt once, in first-seen order."""
    seen: set[bytes] = set()
    for source, raw in records:
        s = stats.per_source.setdefault(source, {"read": 0, "kept": 0})
        stats.read += 1
        s["read"] += 1
        text = normalise_prompt(raw)
        if not text:
            stats.empty += 1
            continue
        key = dedup_key(text)
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        stats.kept += 1
        s["kept"] += 1
        yield text
