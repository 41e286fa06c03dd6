"""The Kaggle submission format: ``imgId_eId,val``, 384 rows per image (eId 0..383), images in order.

Write, read and check; the command line is ``python -m ensemble.submission``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.errors import SubmissionError
from promptblend.vectors import DIM, check_embeddings, check_ids, l2_normalise

HEADER = "imgId_eId,val"

#: Images per block when writing and checking (384 rows each): memory stays near one block, not the file.
BLOCK = 4096


def _keys(img_ids, n: int):
    """The ``imgId_eId`` column for ``n`` images (a pyarrow string array of ids), built in C."""
    import pyarrow as pa
    import pyarrow.compute as pc

    eid = np.tile(np.arange(DIM, dtype=np.int32), n)
    suffix = pa.array([f"_{e}" for e in range(DIM)]).take(pa.array(eid))
    img = img_ids.take(pa.array(np.repeat(np.arange(n, dtype=np.int32), DIM)))
    return pc.binary_join_element_wise(img, suffix, "")


def write_submission(path: str | Path, ids: Sequence[str], embeddings: np.ndarray, normalise: bool = True) -> Path:
    """Write the exact Kaggle file for ``ids`` (in that order) atomically, then validate it.

    Rows are L2-normalised first (the metric is a cosine, and Kaggle's own file is unit-norm).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ids = check_ids(list(ids), what="submission ids")
    emb = check_embeddings(embeddings, n=len(ids), what="submission embeddings")
    if not ids:
        raise SubmissionError("nothing to write: zero images")
    if normalise:
        emb = l2_normalise(emb)
    names = pa.array(ids, type=pa.string())
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with atomic.atomic_path(path, ".csv") as tmp:
        with open(tmp, "wb") as f:
            f.write(f"{HEADER}\n".encode())
            for a in range(0, len(ids), BLOCK):
                m = min(BLOCK, len(ids) - a)
                block = pa.table({"imgId_eId": _keys(names.slice(a, m), m), "val": pa.array(emb[a : a + m].reshape(-1), type=pa.float32())})
                pacsv.write_csv(block, f, options)
        check_submission(tmp, expected_ids=ids)
    return Path(path)


def read_submission(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read and validate a submission; return image ids (file order) and float32 N x 384 rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"submission not found: {path}")
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
    if first != HEADER:
        shown = first[:60] if first[:60].isprintable() else "binary data, not a CSV"
        raise SubmissionError(f"{path}: header must be '{HEADER}', got '{shown}'")
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"imgId_eId": pa.string(), "val": pa.float64()},
                null_values=[""],
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as e:
        raise SubmissionError(f"{path}: unreadable CSV: {e}") from e
    if table.column_names != ["imgId_eId", "val"]:
        raise SubmissionError(f"{path}: columns must be imgId_eId,val, got {table.column_names}")
    rows = table.num_rows
    if rows == 0:
        raise SubmissionError(f"{path}: no rows")
    if rows % DIM:
        raise SubmissionError(f"{path}: {rows} rows is not a multiple of {DIM} (384 rows per image)")
    keys = table.column("imgId_eId")
    n = rows // DIM
    firsts = keys.take(pa.array(np.arange(0, rows, DIM)))
    starts_ok = pc.ends_with(firsts, "_0")
    if not pc.all(starts_ok).as_py():
        k = int(np.flatnonzero(~starts_ok.to_numpy(zero_copy_only=False))[0])
        raise SubmissionError(
            f"{path}: line {k * DIM + 2} is '{firsts[k].as_py()}' but each image's block must start "
            "with <imgId>_0 (384 rows per image, eId 0..383 in order)"
        )
    firsts = pc.utf8_slice_codeunits(firsts, 0, -2)
    for a in range(0, n, BLOCK):  # compared block by block: the expected keys of the whole file are large
        m = min(BLOCK, n - a)
        wrong = pc.not_equal(keys.slice(a * DIM, m * DIM), _keys(firsts.slice(a, m), m))
        if not pc.any(wrong).as_py():
            continue
        r = a * DIM + int(np.flatnonzero(wrong.to_numpy(zero_copy_only=False))[0])
        raise SubmissionError(
            f"{path}: line {r + 2} is '{keys[r].as_py()}' but '{firsts[r // DIM].as_py()}_{r % DIM}' was expected "
            "(384 rows per image, eId 0..383 in order)"
        )
    ids = firsts.to_pylist()
    try:
        check_ids(ids, what=f"{path} image ids")
    except Exception as e:
        raise SubmissionError(str(e)) from e
    vals = table.column("val")
    if vals.null_count:
        raise SubmissionError(f"{path}: {vals.null_count} empty values")
    emb = vals.to_numpy().reshape(n, DIM)
    finite = np.isfinite(emb)
    if not finite.all():
        r = int(np.flatnonzero(~finite.reshape(-1))[0])
        raise SubmissionError(f"{path}: NaN/inf value at line {r + 2} ('{keys[r].as_py()}')")
    return ids, emb.astype(np.float32)


def check_submission(
    path: str | Path, images: str | Path | None = None, expected_ids: Sequence[str] | None = None
) -> list[str]:
    """Validate a submission; with ``images``/``expected_ids`` also require exactly those image ids."""
    ids, _ = read_submission(path)
    if images is not None:
        from promptblend.imagesets import open_image_set

        expected_ids = open_image_set(images).ids
    if expected_ids is not None:
        have, want = set(ids), set(expected_ids)
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            raise SubmissionError(
                f"{path}: image ids differ from the expected set: {len(missing)} missing {missing[:3]}, "
                f"{len(extra)} extra {extra[:3]}"
            )
    return ids


def submission_from_prompts(path: str | Path, ids: Sequence[str], prompts: Sequence[str], model: str | None = None) -> Path:
    """Embed ``prompts`` with the scoring model and write their submission."""
    from promptblend.text import encode

    return write_submission(path, ids, encode(list(prompts), model=model))
