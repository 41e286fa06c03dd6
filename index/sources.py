"""Streaming readers of prompt files: ``.txt``/``.txt.gz``, ``.csv`` (a ``prompt`` column),
``.parquet`` and ``.jsonl`` (each optionally gzipped where the format allows).

Bytes that are not UTF-8 become U+FFFD, as ``errors="replace"`` decodes them; a
:class:`DecodeReport` counts the records where that happened (or refuses them when strict).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from promptblend.errors import BankError

PROMPT_COLUMNS = ("prompt", "Prompt", "text", "caption")
#: Lone surrogates: undecodable bytes under ``surrogateescape`` (or escaped ones in JSON).
_UNDECODED = re.compile("[\ud800-\udfff]")
#: What a damaged file raises while it is read: truncated or non-gzip data, malformed CSV.
_READ_ERRORS = (OSError, EOFError, zlib.error, csv.Error)


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def _pick_column(columns: list[str], path: Path) -> str:
    for c in PROMPT_COLUMNS:
        if c in columns:
            return c
    raise BankError(f"{path} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}; found {columns})")


def read_txt(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)``: one prompt per line."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            yield n, line.rstrip("\r\n")


def read_csv(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the ``prompt`` column of a CSV with a header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        col = _pick_column(list(reader.fieldnames or []), path)
        for row in reader:
            yield reader.line_num, row.get(col) or ""


def read_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)``: one JSON object per line with a ``prompt`` field (or a bare JSON string)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BankError(f"{path}:{n} is not JSON: {e}") from e
            if isinstance(obj, str):
                yield n, obj
            elif isinstance(obj, dict):
                yield n, str(obj[_pick_column(list(obj), path)] or "")
            else:
                raise BankError(f"{path}:{n} is neither an object nor a string")


def read_parquet(path: Path, batch_rows: int = 65536) -> Iterator[tuple[int, str]]:
    """``(row number, text)`` of the ``prompt`` column of a Parquet file, read in record batches."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise BankError(f"cannot read parquet {path}: {e}") from e
    col = _pick_column(pf.schema_arrow.names, path)
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[col]):
        for value in batch.column(0).to_pylist():
            row += 1
            yield row, value or ""


READERS: dict[str, Callable[[Path], Iterator[tuple[int, str]]]] = {
    ".txt": read_txt,
    ".txt.gz": read_txt,
    ".csv": read_csv,
    ".csv.gz": read_csv,
    ".jsonl": read_jsonl,
    ".jsonl.gz": read_jsonl,
    ".parquet": read_parquet,
}


def reader_for(path: str | Path) -> Callable[[Path], Iterator[tuple[int, str]]]:
    """The reader for ``path``'s extension; unknown extensions raise :class:`BankError`."""
    name = Path(path).name.lower()
    for ext in sorted(READERS, key=len, reverse=True):
        if name.endswith(ext):
            return READERS[ext]
    raise BankError(f"unsupported prompt file {path}: use one of {', '.join(READERS)}")


def check_sources(paths: list[str | Path]) -> list[tuple[Path, Callable]]:
    """``(path, reader)`` of each prompt file; a missing file or unknown format raises :class:`BankError`."""
    readers = []
    for p in map(Path, paths):
        if not p.is_file():
            raise BankError(f"prompt file not found: {p}" + (" (a folder)" if p.is_dir() else ""))
        readers.append((p, reader_for(p)))
    return readers


@dataclass
class DecodeReport:
    """Records holding bytes that are not UTF-8, per source: replaced by U+FFFD, or refused when ``strict``."""

    strict: bool = False
    replaced: dict[int, int] = field(default_factory=dict)
    first_line: dict[int, int] = field(default_factory=dict)

    def check(self, source: int, path: Path, line: int, text: str) -> str:
        """``text`` with undecodable bytes replaced (counted), or :class:`BankError` when strict."""
        if not _UNDECODED.search(text):
            return text
        if self.strict:
            raise BankError(f"{path}:{line} is not valid UTF-8 (--strict-utf8); fix or re-encode the file")
        self.replaced[source] = self.replaced.get(source, 0) + 1
        self.first_line.setdefault(source, line)
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a lone surrogate a JSON escape made, not a byte
            return _UNDECODED.sub("\ufffd", text)

    def total(self) -> int:
        """Records with replaced bytes in all sources."""
        return sum(self.replaced.values())


def iter_prompts(paths: list[str | Path], report: DecodeReport | None = None) -> Iterator[tuple[int, str]]:
    """``(source number, raw text)`` for every record of every file, streamed in order.

    A truncated, corrupt or non-gzip file raises :class:`BankError` naming it.
    """
    report = report or DecodeReport()
    for n, (p, read) in enumerate(check_sources(paths)):
        try:
            for line, text in read(p):
                yield n, report.check(n, p, line, text)
        except _READ_ERRORS as e:
            raise BankError(f"cannot read prompt file {p}: {e}") from e
