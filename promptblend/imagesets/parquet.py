"""Parquet image sets: an image column (encoded bytes, or Hugging Face datasets' ``{bytes, path}`` struct,
or a path relative to the file) and optional id and prompt columns, the layout of Hugging Face image
datasets and of DiffusionDB's metadata + images.

A source is one ``.parquet`` file or a folder of them (read in name order). Ids come from the id column,
else the image path's stem, else the row number. A null prompt means that row has no truth (the set's
prompts then lack its id: :meth:`~.base.ImageSet.prompt_list` names it); a set without a prompt column
has no truth. Rows are read a row group at a time.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ImageSetError
from .base import ImageSet, Raw
from .decode import IMAGE_EXTENSIONS

#: Column names read from a parquet: the first present of each list.
COLUMNS = {"id": ("image_name", "imgId", "id", "key", "__key__"),
           "image": ("image", "image_bytes", "jpg", "png", "webp", "path", "image_path"),
           "prompt": ("prompt", "text", "caption", "txt")}
#: Rows per row group when writing (the unit of reading).
ROW_GROUP = 256


def claims(source: Any) -> bool:
    """A ``.parquet`` file, or a folder holding ``*.parquet``."""
    if isinstance(source, (list, tuple)):
        return False
    path = Path(source)
    return path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")))


def parquet_files(source: str | Path) -> list[Path]:
    """The parquet files of ``source`` (one file, or a folder's ``*.parquet`` sorted)."""
    path = Path(source)
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith(".")) if path.is_dir() else [path]
    missing = [str(p) for p in files if not p.is_file()]
    if not files or missing:
        raise ImageSetError(f"parquet not found: {missing[0] if missing else source}")
    return files


def _pick(columns: list[str], role: str, path: Path, required: bool = True) -> str | None:
    for name in COLUMNS[role]:
        if name in columns:
            return name
    if required:
        raise ImageSetError(f"{path} has no {role} column (one of {', '.join(COLUMNS[role])}; columns: {columns})")
    return None


def _stem(value: Any) -> str:
    """An id from an id cell or an image path (a known image extension removed)."""
    text = str(value)
    return text[: -len(Path(text).suffix)] if Path(text).suffix.lower() in IMAGE_EXTENSIONS else text


def _cell_bytes(cell: Any, folder: Path) -> tuple[bytes | None, str | None]:
    """``(image bytes, None)`` of an image cell, or ``(None, why)``."""
    if isinstance(cell, dict):  # HF datasets' {"bytes": ..., "path": ...}
        cell = cell.get("bytes") or cell.get("path")
    if cell is None:
        return None, "no image (null cell)"
    if isinstance(cell, str):
        try:
            return (folder / cell).read_bytes(), None
        except OSError as e:
            return None, f"cannot read {cell}: {e}"
    return bytes(cell), None


class ParquetSet(ImageSet):
    """Rows of one or more parquet files, located by (file, row group, offset)."""

    def __init__(self, root: str, files: list[Path], columns: tuple[str, str | None], group_sizes: list[int],
                 ids: list[str], digests: list[bytes], prompts: dict[str, str] | None) -> None:
        self.root, self.files, self.columns = root, files, columns
        self.ids, self._digests, self.prompts, self.skipped = ids, digests, prompts, []
        self.group_sizes = group_sizes  # per (file, row group), in order
        self._ends = list(itertools.accumulate(group_sizes))
        self._where = [(f, g) for f, path in enumerate(files) for g in range(_row_groups(path))]

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(g for g in self.group_sizes if g)

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        """Image-byte digests (the same as the same files' in a folder)."""
        return b"content", self._digests if rows is None else [self._digests[r] for r in rows]

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        """Rows in the order asked; the row group last read is kept, so runs within a group read it once."""
        import pyarrow.parquet as pq

        group, cells, handles = -1, [], {}
        image_col, prompt_col = self.columns
        for row in rows:
            g = bisect.bisect_right(self._ends, row)
            if g != group:
                f, local = self._where[g]
                if f not in handles:
                    handles = {f: pq.ParquetFile(self.files[f])}
                cols = [image_col] + ([prompt_col] if prompt_col else [])
                table = handles[f].read_row_group(local, columns=cols)
                cells = [table.column(c).combine_chunks() for c in cols]  # Arrow arrays: cells convert one by one
                group = g
            i = row - (self._ends[g] - self.group_sizes[g])
            f = self._where[g][0]
            data, why = _cell_bytes(cells[0][i].as_py(), self.files[f].parent)
            prompt = cells[1][i].as_py() if prompt_col else None
            yield Raw(self.ids[row], f"{self.files[f]}:{self.ids[row]}", data, prompt, why)


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).num_row_groups


def open_parquet_set(source: str | Path) -> ParquetSet:
    """Read ids, prompts and image digests of every row (a row group at a time); an unreadable file, a
    missing image column or repeated ids raise :class:`ImageSetError`."""
    import pyarrow.parquet as pq

    files = parquet_files(source)
    ids: list[str] = []
    digests: list[bytes] = []
    prompts: dict[str, str] = {}
    sizes: list[int] = []
    columns: tuple[str, str | None] | None = None
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow: ArrowInvalid, OSError...
            raise ImageSetError(f"cannot read parquet {path}: {type(e).__name__}: {e}") from e
        names = pf.schema_arrow.names
        cols = (_pick(names, "image", path), _pick(names, "prompt", path, required=False))
        if columns is not None and cols != columns:
            raise ImageSetError(f"{path} has columns {cols}, the first file {columns}")
        columns = cols
        id_col = _pick(names, "id", path, required=False)
        for g in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(g, columns=[c for c in (cols[0], cols[1], id_col) if c])
            except Exception as e:
                raise ImageSetError(f"cannot read row group {g} of {path}: {type(e).__name__}: {e}") from e
            images = table.column(cols[0]).to_pylist()
            texts = table.column(cols[1]).to_pylist() if cols[1] else [None] * len(images)
            keys = table.column(id_col).to_pylist() if id_col else [None] * len(images)
            for image, text, key in zip(images, texts, keys):
                data, _ = _cell_bytes(image, path.parent)
                if key is None and isinstance(image, dict) and image.get("path"):
                    key = image["path"]
                id_ = _stem(key) if key is not None else f"{len(ids):08d}"
                ids.append(id_)
                digests.append(hashlib.sha256(data or b"").digest())
                if text is not None:
                    prompts[id_] = str(text)
            sizes.append(len(images))
    if not ids:
        raise ImageSetError(f"{source} holds no rows")
    if len(set(ids)) != len(ids):
        dup = [k for k, n in Counter(ids).items() if n > 1]
        raise ImageSetError(f"{source} repeats image ids, e.g. {dup[:3]}")
    return ParquetSet(str(source), files, columns, sizes, ids, digests, prompts or None)


def write_parquet(path: str | Path, rows: Iterable[tuple[str, bytes, str | None]]) -> int:
    """Write ``(id, image bytes, prompt or None)`` rows atomically as a parquet with ``image_name``, an HF
    ``image`` struct (``{bytes, path}``) and ``prompt`` columns, ``ROW_GROUP`` rows per group; returns rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import atomic_path
    from .decode import image_suffix

    schema = pa.schema([("image_name", pa.string()),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("prompt", pa.string())])
    n, rows = 0, iter(rows)
    with atomic_path(Path(path), ".parquet") as tmp, pq.ParquetWriter(tmp, schema) as writer:
        while chunk := list(itertools.islice(rows, ROW_GROUP)):
            writer.write_table(pa.table({
                "image_name": [i for i, _, _ in chunk],
                "image": [{"bytes": b, "path": f"{i}.{image_suffix(b)}"} for i, b, _ in chunk],
                "prompt": [p for _, _, p in chunk],
            }, schema=schema))
            n += len(chunk)
    return n
