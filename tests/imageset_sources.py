"""One small image-prompt set written as each source (folder in the competition's layout, shards, Parquet,
DiffusionDB's metadata parquet + image parts), optionally with one truncated PNG: what the contract tests
of every source share."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("folder", "shards", "parquet", "diffusiondb")
#: The source kind :func:`promptblend.imagesets.source_kind` names for each layout written here.
KIND_OF = {"diffusiondb": "parquet"}


def png(i: int, size: int = 24) -> bytes:
    """A random RGB PNG, different for each ``i``."""
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "png")
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    """The first 60% of an image's bytes: the header parses, the pixels do not."""
    return data[: int(len(data) * 0.6)]


def samples(n: int = 7, bad: int | None = None) -> list[tuple[str, bytes, str]]:
    """``(id, image bytes, prompt)`` of ``n`` images; image ``bad`` truncated."""
    return [(f"img{i:02d}", truncated(png(i)) if i == bad else png(i), f"a photo of thing {i}") for i in range(n)]


def write_source(kind: str, rows: list[tuple[str, bytes, str | None]], root: Path, shard_size: int = 3) -> Path:
    """The rows as a ``folder`` (``root/images/ID.png`` + ``root/prompts.csv``), ``shards`` (with
    ``sizes.json``) or ``parquet`` (one file); returns what to open."""
    import json

    import pandas as pd

    from promptblend.imagesets.parquet import write_parquet
    from promptblend.imagesets.shards import SIZES_JSON, shard_name, write_shard

    root.mkdir(parents=True)
    if kind == "folder":
        (root / "images").mkdir()
        for id_, data, _ in rows:
            (root / "images" / f"{id_}.png").write_bytes(data)
        truth = [(i, p) for i, _, p in rows if p is not None]
        pd.DataFrame(truth, columns=["imgId", "prompt"]).to_csv(root / "prompts.csv", index=False)
        return root
    if kind == "shards":
        sizes = {}
        for s, start in enumerate(range(0, len(rows), shard_size)):
            chunk = rows[start : start + shard_size]
            write_shard(root / shard_name("part", s), [{"__key__": i, "png": d, "txt": p} for i, d, p in chunk])
            sizes[shard_name("part", s)] = len(chunk)
        (root / SIZES_JSON).write_text(json.dumps(sizes))
        return root
    if kind == "diffusiondb":
        return write_diffusiondb(rows, root, shard_size)
    write_parquet(root / "set.parquet", rows)
    return root / "set.parquet"


def write_diffusiondb(rows: list[tuple[str, bytes, str | None]], root: Path, part_size: int = 3) -> Path:
    """DiffusionDB's layout: ``metadata.parquet`` (image_name, prompt, part_id, seed, step, cfg, sampler) and
    parts of ``part_size`` images in each way a user holds them, in turn: ``images/part-NNNNNN.zip`` as
    downloaded (with its JSON), unzipped ``images/part-NNNNNN/``, and ``part-NNNNNN/`` beside the parquet;
    the metadata also lists a part that is not here (its rows are not in the set). Returns the parquet."""
    import json
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    table: dict[str, list] = {k: [] for k in ("image_name", "prompt", "part_id", "seed", "step", "cfg", "sampler")}
    chunks = [rows[s : s + part_size] for s in range(0, len(rows), part_size)] + [[("absent", b"", "not here")]]
    for part, chunk in enumerate(chunks, start=1):
        name = f"part-{part:06d}"
        for id_, _, prompt in chunk:
            for k, v in zip(table, (f"{id_}.png", prompt, part, 7 * part, 50, 7.0, 8)):
                table[k].append(v)
        if part == len(chunks):
            continue  # listed, not downloaded
        layout = part % 3
        if layout == 1:
            (root / "images").mkdir(exist_ok=True)
            with zipfile.ZipFile(root / "images" / f"{name}.zip", "w") as z:
                for id_, data, _ in chunk:
                    z.writestr(f"{id_}.png", data)
                z.writestr(f"{name}.json", json.dumps({f"{i}.png": {"p": p} for i, _, p in chunk}))
        else:
            folder = root / "images" / name if layout == 2 else root / name
            folder.mkdir(parents=True)
            for id_, data, _ in chunk:
                (folder / f"{id_}.png").write_bytes(data)
    pq.write_table(pa.table(table), root / "metadata.parquet", row_group_size=4)
    return root / "metadata.parquet"
