"""Convert image-prompt sets between a folder (+ prompts.csv), a DiffusionDB-style parquet and WebDataset shards.

``python -m experiments.sets convert SRC --out DIR [--shard-size N] [--to shards|folder]``: a folder or a
parquet becomes shards (``DIR/images-000000.tar``...); shards become a folder of images + ``prompts.csv``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from promptblend import atomic
from promptblend.cli import entry_point
from promptblend.errors import ConfigError, ImageSetError
from promptblend.images import is_image_folder, open_image_set
from promptblend.shards import ShardSet, is_shard_source, shard_name, write_shard

SHARD_PREFIX = "images"
#: Column names read from a parquet: the first present of each list.
PARQUET_COLUMNS = {"id": ("image_name", "imgId", "id", "key"), "image": ("image", "image_bytes", "path", "image_path"),
                   "prompt": ("prompt", "text", "caption")}


def _pick(columns: list[str], role: str, path: Path) -> str:
    """The parquet column playing ``role``."""
    for name in PARQUET_COLUMNS[role]:
        if name in columns:
            return name
    raise ConfigError(f"{path} has no {role} column (one of {PARQUET_COLUMNS[role]}; columns: {columns})")


def _parquet_samples(path: Path) -> Iterator[dict]:
    """Samples of a parquet of image bytes or paths (relative to the parquet) with prompts."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = table.column_names
    id_col, image_col, prompt_col = (_pick(cols, r, path) for r in ("id", "image", "prompt"))
    for row in table.to_pylist():
        image = row[image_col]
        if isinstance(image, dict):  # HF datasets' {"bytes": ..., "path": ...}
            image = image.get("bytes") or image.get("path")
        if isinstance(image, str):
            image = (path.parent / image).read_bytes()
        key = Path(str(row[id_col])).stem
        yield {"__key__": key, _suffix(image): image, "txt": str(row[prompt_col])}


def _suffix(data: bytes) -> str:
    """``png``, ``jpg`` or ``webp`` from the image's magic bytes."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def _folder_samples(folder: Path) -> Iterator[dict]:
    """Samples of an image folder: original file bytes (no re-encoding), prompts.csv text when present."""
    image_set = open_image_set(folder)
    if isinstance(image_set, ShardSet):
        raise ImageSetError(f"{folder} holds shards, not images")
    prompts = image_set.prompt_list() if image_set.prompts is not None else None  # every id, or TruthError
    for i, (id_, path) in enumerate(zip(image_set.ids, image_set.paths)):
        suffix = path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
        sample = {"__key__": id_, suffix: path.read_bytes()}
        if prompts is not None:
            sample["txt"] = prompts[i]
        yield sample


def to_shards(src: str | Path, out: str | Path, shard_size: int = 1000) -> dict:
    """Write the samples of a folder or parquet as shards under ``out``; returns counts and the brace pattern."""
    src, out = Path(src), Path(out)
    samples = _parquet_samples(src) if src.suffix == ".parquet" else _folder_samples(src)
    shards, n, chunk = 0, 0, []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == shard_size:
            write_shard(out / shard_name(SHARD_PREFIX, shards), chunk)
            shards, n, chunk = shards + 1, n + len(chunk), []
    if chunk:
        write_shard(out / shard_name(SHARD_PREFIX, shards), chunk)
        shards, n = shards + 1, n + len(chunk)
    if not n:
        raise ImageSetError(f"{src} holds no images")
    info = {"n_images": n, "shards": shards, "pattern": f"{SHARD_PREFIX}-{{000000..{shards - 1:06d}}}.tar"}
    atomic.write_text(out / "sizes.json", json.dumps({shard_name(SHARD_PREFIX, i): min(shard_size, n - i * shard_size)
                                                      for i in range(shards)}, indent=1))
    return info


def to_folder(src: str | Path | list, out: str | Path) -> dict:
    """Unpack a shard set's images (original bytes) into ``out`` with ``prompts.csv`` from the ``.txt`` members."""
    import pandas as pd

    image_set = open_image_set(src)
    if not isinstance(image_set, ShardSet):
        raise ImageSetError(f"{src} is not a shard set")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for _, id_, _, data, _ in image_set.raw(split_workers=False):
        with atomic.atomic_path(out / f"{id_}.{_suffix(data)}") as tmp:
            tmp.write_bytes(data)
    if image_set.prompts:
        with atomic.atomic_path(out / "prompts.csv", ".csv") as tmp:
            pd.DataFrame({"imgId": image_set.ids, "prompt": image_set.prompt_list()}).to_csv(tmp, index=False)
    return {"n_images": len(image_set), "prompts": bool(image_set.prompts)}


def convert(src: str | Path, out: str | Path, shard_size: int = 1000, to: str | None = None) -> dict:
    """Shards -> folder, or folder/parquet -> shards (``to`` forces the direction)."""
    to = to or ("folder" if is_shard_source(src) and not is_image_folder(src) else "shards")
    if to == "folder":
        return to_folder(src, out)
    return to_shards(src, out, shard_size)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: ``convert SRC --out DIR``."""
    ap = argparse.ArgumentParser(prog="python -m experiments.sets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="folder|parquet -> shards, or shards -> folder")
    c.add_argument("src", help="image folder (+ prompts.csv), parquet (image bytes/paths + prompts), or shards")
    c.add_argument("--out", required=True)
    c.add_argument("--shard-size", type=int, default=1000)
    c.add_argument("--to", choices=("shards", "folder"), default=None, help="direction (default: from SRC)")
    args = ap.parse_args(argv)
    info = convert(args.src, args.out, args.shard_size, args.to)
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
