"""Streaming readers of prompt files: ``.txt``/``.txt.gz``, ``.csv`` (a ``prompt`` column),
``.parquet`` and ``.jsonl`` (each optionally gzipped where the format allows)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

from promptblend.errors import BankError

PROMPT_COLUMNS = ("prompt", "Prompt", "text", "caption")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _pick_column(columns: list[str], path: Path) -> str:
    for c in PROMPT_COLUMNS:
        if c in columns:
            return c
    raise BankError(f"{path} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}; found {columns})")


def read_txt(path: Path) -> Iterator[str]:
    """One prompt per line."""
    with _open_text(path) as f:
        for line in f:
            yield line.rstrip("\r\n")


def read_csv(path: Path) -> Iterator[str]:
    """The ``prompt`` column of a CSV with a header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        col = _pick_column(list(reader.fieldnames or []), path)
        for row in reader:
            yield row.get(col) or ""


def read_jsonl(path: Path) -> Iterator[str]:
    """One JSON object per line with a ``prompt`` field (or a bare JSON string)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BankError(f"{path}:{n} is not JSON: {e}") from e
            if isinstance(obj, str):
                yield obj
            elif isinstance(obj, dict):
                yield str(obj[_pick_column(list(obj), path)] or "")
            else:
                raise BankError(f"{path}:{n} is neither an object nor a string")


def read_parquet(path: Path, batch_rows: int = 65536) -> Iterator[str]:
    """The ``prompt`` column of a Parquet file, read in record batches."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise BankError(f"cannot read parquet {path}: {e}") from e
    col = _pick_column(pf.schema_arrow.names, path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[col]):
        for value in batch.column(0).to_pylist():
            yield value or ""


READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    ".txt": read_txt,
    ".txt.gz": read_txt,
    ".csv": read_csv,
    ".csv.gz": read_csv,
    ".jsonl": read_jsonl,
    ".jsonl.gz": read_jsonl,
    ".parquet": read_parquet,
}


def reader_for(path: str | Path) -> Callable[[Path], Iterator[str]]:
    """The reader for ``path``'s extension; unknown extensions raise :class:`BankError`."""
    name = Path(path).name.lower()
    for ext in sorted(READERS, key=len, reverse=True):
        if name.endswith(ext):
            return READERS[ext]
    raise BankError(f"unsupported prompt file {path}: use one of {', '.join(READERS)}")


def iter_prompts(paths: list[str | Path]) -> Iterator[tuple[int, str]]:
    """``(source number, raw text)`` for every record of every file, streamed in order."""
    readers = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise BankError(f"prompt file not found: {p}")
        readers.append((p, reader_for(p)))
    for n, (p, read) in enumerate(readers):
        yield from ((n, text) for text in read(p))
