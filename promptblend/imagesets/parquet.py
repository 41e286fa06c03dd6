"""Parquet image sets: an image column (encoded bytes, or Hugging Face datasets' ``{bytes, path}`` struct,
or a path relative to the file) and optional id and prompt columns, the layout of Hugging Face image
datasets and of DiffusionDB's metadata + images.

DiffusionDB's ``metadata.parquet`` names no image column: a row's image is ``image_name`` in its part
``part_id``, a ``part-NNNNNN`` folder (unzipped) or ``part-NNNNNN.zip`` (as downloaded) under ``images/``
beside the parquet or beside it directly. The set is the rows whose part is here (most users fetch a few
of its 2,000 parts); a part that is here but lacks a row's image gives that row a per-sample error.

A source is one ``.parquet`` file or a folder of them (read in name order). Ids come from the id column,
else the image path's stem, else the row number. A null prompt means that row has no truth (the set's
prompts then lack its id: :meth:`~.base.ImageSet.prompt_list` names it); a set without a prompt column
has no truth. Rows are read a row group at a time.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageSetError
from .base import ImageSet, Raw
from .decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

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


#: Where DiffusionDB's image parts lie, relative to its metadata parquet (folder or ``.zip``).
PART_LAYOUTS = ("images/part-{:06d}", "part-{:06d}")
#: The columns that mark DiffusionDB's metadata (no image column): the image's name and its part.
PART_COLUMNS = ("image_name", "part_id")


class Parts:
    """DiffusionDB's image parts beside a metadata parquet in ``folder``: which part is where (folder or zip),
    and a row's image bytes from it. Picklable (DataLoader workers): open zips live in a reader's ``zips``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._where: dict[int, Path | None] = {}

    def where(self, part: int) -> Path | None:
        """The folder or zip of ``part``, or None when it is not here."""
        if part not in self._where:
            found = [self.folder / (layout.format(part) + suffix) for layout in PART_LAYOUTS for suffix in ("", ".zip")]
            self._where[part] = next((p for p in found if p.exists()), None)
        return self._where[part]

    def read(self, part: int, name: str, zips: dict) -> tuple[bytes | None, str | None]:
        """``(bytes, None)`` of image ``name`` in ``part``, or ``(None, why)``; ``zips``: open zips by path."""
        import zipfile

        where = self.where(part)
        try:
            if where.suffix != ".zip":
                return (where / name).read_bytes(), None
            if where not in zips:
                z = zipfile.ZipFile(where)
                zips[where] = (z, {Path(n).name: n for n in z.namelist()})
            z, members = zips[where]
            if name not in members:
                return None, f"{name} is not in {where}"
            return z.read(members[name]), None
        except (OSError, zipfile.BadZipFile) as e:
            return None, f"cannot read {name} from {where}: {e}"


def _close(zips: dict) -> None:
    for z, _ in zips.values():
        z.close()
    zips.clear()


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


@dataclass(frozen=True)
class Columns:
    """The columns a set reads: the image (DiffusionDB: its name), the prompt, DiffusionDB's part."""

    image: str
    prompt: str | None
    part: str | None = None

    @classmethod
    def of(cls, names: list[str], path: Path) -> Columns:
        """The columns of a file's schema; no image column is a named error unless DiffusionDB's are there."""
        prompt = _pick(names, "prompt", path, required=False)
        if all(c in names for c in PART_COLUMNS) and _pick(names, "image", path, required=False) is None:
            return cls(PART_COLUMNS[0], prompt, PART_COLUMNS[1])
        return cls(_pick(names, "image", path), prompt)

    def read(self) -> list[str]:
        """The columns to read for the images and prompts."""
        return [c for c in (self.image, self.prompt, self.part) if c]


class ParquetSet(ImageSet):
    """Rows of one or more parquet files, located by (file, row group, offset)."""

    def __init__(self, root: str, files: list[Path], columns: Columns, group_sizes: list[int],
                 ids: list[str], digests: list[bytes], prompts: dict[str, str] | None,
                 offsets: list[int] | None = None) -> None:
        self.root, self.files, self.columns = root, files, columns
        self.ids, self._digests, self.prompts, self.skipped = ids, digests, prompts, []
        self.group_sizes = group_sizes  # rows of the set per (file, row group), in order
        self._ends = list(itertools.accumulate(group_sizes))
        self._where = [(f, g) for f, path in enumerate(files) for g in range(_row_groups(path))]
        self._offsets = offsets  # each row's offset in its row group, where rows were left out (DiffusionDB)
        self._parts = [Parts(path.parent) for path in files] if columns.part else None

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(g for g in self.group_sizes if g)

    def digests(self, fast: bool = False, rows: Sequence[int] | None = None) -> tuple[bytes, list[bytes]]:
        """Image-byte digests (the same as the same files' in a folder)."""
        return b"content", self._digests if rows is None else [self._digests[r] for r in rows]

    def stream(self, rows: Iterable[int]) -> Iterator[Raw]:
        """Rows in the order asked; the row group last read is kept, so runs within a group read it once."""
        import pyarrow.parquet as pq

        group, cells, handles, zips = -1, {}, {}, {}
        cols = self.columns
        try:
            for row in rows:
                g = bisect.bisect_right(self._ends, row)
                if g != group:
                    f, local = self._where[g]
                    if f not in handles:
                        handles = {f: pq.ParquetFile(self.files[f])}
                        _close(zips)
                    table = handles[f].read_row_group(local, columns=cols.read())
                    cells = {c: table.column(c).combine_chunks() for c in cols.read()}  # cells convert one by one
                    group = g
                i = row - (self._ends[g] - self.group_sizes[g]) if self._offsets is None else self._offsets[row]
                f = self._where[g][0]
                image = cells[cols.image][i].as_py()
                if cols.part:
                    data, why = self._parts[f].read(int(cells[cols.part][i].as_py()), str(image), zips)
                else:
                    data, why = _cell_bytes(image, self.files[f].parent)
                prompt = cells[cols.prompt][i].as_py() if cols.prompt else None
                yield Raw(self.ids[row], f"{self.files[f]}:{self.ids[row]}", data, prompt, why)
        finally:
            _close(zips)


def _column(table, name: str | None) -> list:
    """A column of an Arrow table as Python values, or Nones where ``name`` is None."""
    return table.column(name).to_pylist() if name else [None] * table.num_rows


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
    offsets: list[int] = []
    rows_read = 0
    columns: Columns | None = None
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow: ArrowInvalid, OSError...
            raise ImageSetError(f"cannot read parquet {path}: {type(e).__name__}: {e}") from e
        names = pf.schema_arrow.names
        cols = Columns.of(names, path)
        if columns is not None and cols != columns:
            raise ImageSetError(f"{path} has columns {cols}, the first file {columns}")
        columns = cols
        id_col = _pick(names, "id", path, required=False)
        parts, zips = Parts(path.parent) if cols.part else None, {}
        for g in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(g, columns=list(dict.fromkeys(cols.read() + ([id_col] if id_col else []))))
            except Exception as e:
                raise ImageSetError(f"cannot read row group {g} of {path}: {type(e).__name__}: {e}") from e
            kept = 0
            for i, (image, text, key, part) in enumerate(zip(*(_column(table, c) for c in (
                    cols.image, cols.prompt, id_col, cols.part)))):
                if parts is not None:
                    if part is None or parts.where(int(part)) is None:
                        continue  # its part is not here: not in the set
                    data, _ = parts.read(int(part), str(image), zips)
                else:
                    data, _ = _cell_bytes(image, path.parent)
                if key is None and isinstance(image, dict) and image.get("path"):
                    key = image["path"]
                id_ = _stem(key) if key is not None else f"{len(ids):08d}"
                ids.append(id_)
                offsets.append(i)
                digests.append(hashlib.sha256(data or b"").digest())
                if text is not None:
                    prompts[id_] = str(text)
                kept += 1
            sizes.append(kept)
            rows_read += table.num_rows
        _close(zips)
    if columns.part and ids and len(ids) < rows_read:
        log.info("%s: %d of %d rows have their image part here", source, len(ids), rows_read)
    if not ids:
        if columns.part and rows_read:
            raise ImageSetError(f"{source}: none of its {rows_read} rows has its image part here (looked for "
                                "images/part-NNNNNN/ or .zip and part-NNNNNN/ or .zip beside it)")
        raise ImageSetError(f"{source} holds no rows")
    if len(set(ids)) != len(ids):
        dup = [k for k, n in Counter(ids).items() if n > 1]
        raise ImageSetError(f"{source} repeats image ids, e.g. {dup[:3]}")
    return ParquetSet(str(source), files, columns, sizes, ids, digests, prompts or None,
                      offsets if len(ids) < rows_read else None)


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
