"""Convert image-prompt sets between the three sources: a folder (+ ``prompts.csv``), WebDataset shards and
Parquet (an HF-style ``{bytes, path}`` image column + a prompt column).

``python -m experiments.sets convert SRC --out DIR [--to shards|folder|parquet] [--shard-size N] [--skip-bad]``

SRC is anything :func:`promptblend.imagesets.open_image_set` opens. Images keep their original bytes
(no re-encoding); every image is decoded first, and a bad one (a truncated PNG...) is a named error, or
with ``--skip-bad`` left out and counted. A row without a prompt (a null Parquet cell) stays without one:
it gets no line in ``prompts.csv`` and a null in Parquet; shards, whose ``.txt`` is on every key or none,
refuse such a set (:class:`TruthError`). Default direction: shards become a folder, anything else shards.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from promptblend import atomic
from promptblend.cli import entry_point
from promptblend.errors import BadImageError, TruthError
from promptblend.imagesets import (
    ImageSet,
    Raw,
    image_suffix,
    open_image_set,
    source_kind,
)
from promptblend.imagesets.batches import find_bad
from promptblend.imagesets.parquet import write_parquet
from promptblend.imagesets.shards import SIZES_JSON, shard_name, write_shard

SHARD_PREFIX = "images"
PARQUET_NAME = "images.parquet"
TARGETS = ("shards", "folder", "parquet")


def _rows(image_set: ImageSet) -> Iterator[Raw]:
    return image_set.stream(range(len(image_set)))


def to_shards(image_set: ImageSet, out: Path, shard_size: int = 1000) -> dict:
    """Write the set as ``out/images-000000.tar``... with ``sizes.json``; returns counts and the brace pattern."""
    if image_set.prompts is not None:
        missing = [i for i in image_set.ids if i not in image_set.prompts]
        if missing:
            raise TruthError(f"{len(missing)} images have no prompt (e.g. {missing[:3]}); a shard set's .txt is on "
                             "every key or none")
    sizes: dict[str, int] = {}
    chunk: list[dict] = []
    for i, raw in enumerate(_rows(image_set)):
        sample = {"__key__": raw.id, image_suffix(raw.data): raw.data}
        if raw.prompt is not None:
            sample["txt"] = raw.prompt
        chunk.append(sample)
        if len(chunk) == shard_size or i == len(image_set) - 1:
            name = shard_name(SHARD_PREFIX, len(sizes))
            write_shard(out / name, chunk)
            sizes[name], chunk = len(chunk), []
    atomic.write_text(out / SIZES_JSON, json.dumps(sizes, indent=1))
    return {"n_images": len(image_set), "shards": len(sizes),
            "pattern": f"{SHARD_PREFIX}-{{000000..{len(sizes) - 1:06d}}}.tar"}


def to_folder(image_set: ImageSet, out: Path) -> dict:
    """Write each image as ``out/ID.png|jpg|webp`` (original bytes) and ``prompts.csv`` for the rows with one."""
    import pandas as pd

    truth = {}
    for raw in _rows(image_set):
        with atomic.atomic_path(out / f"{raw.id}.{image_suffix(raw.data)}") as tmp:
            tmp.write_bytes(raw.data)
        if raw.prompt is not None:
            truth[raw.id] = raw.prompt
    if truth:
        with atomic.atomic_path(out / "prompts.csv", ".csv") as tmp:
            pd.DataFrame({"imgId": list(truth), "prompt": list(truth.values())}).to_csv(tmp, index=False)
    return {"n_images": len(image_set), "prompts": len(truth)}


def to_parquet(image_set: ImageSet, out: Path) -> dict:
    """Write ``out`` (a ``.parquet`` path, or ``out/images.parquet``) with id, image struct and prompt columns."""
    path = out if out.suffix == ".parquet" else out / PARQUET_NAME
    n = write_parquet(path, ((raw.id, raw.data, raw.prompt) for raw in _rows(image_set)))
    return {"n_images": n, "file": str(path)}


def convert(src, out: str | Path, to: str | None = None, shard_size: int = 1000, skip_bad: bool = False,
            workers: int = 0) -> dict:
    """Convert ``src`` into ``to`` (default: shards -> folder, anything else -> shards) under ``out``.

    Every image is decoded first: a bad one raises :class:`BadImageError` unless ``skip_bad`` leaves it out
    (counted in the result as ``skipped``).
    """
    to = to or ("folder" if source_kind(src) == "shards" else "shards")
    if to not in TARGETS:
        raise TruthError(f"unknown target {to!r}; use one of {', '.join(TARGETS)}")
    image_set = open_image_set(src, skip_bad=skip_bad, workers=workers)
    if not skip_bad:
        bad = find_bad(image_set, workers)
        if bad:
            raise BadImageError(bad[0].name, f"{bad[0].reason} ({len(bad)} bad image(s) in all; --skip-bad leaves "
                                             "them out)")
    writers = {"shards": lambda: to_shards(image_set, Path(out), shard_size),
               "folder": lambda: to_folder(image_set, Path(out)),
               "parquet": lambda: to_parquet(image_set, Path(out))}
    info = writers[to]()
    if image_set.skipped:
        info["skipped"] = len(image_set.skipped)
    return info


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: ``convert SRC --out DIR``."""
    ap = argparse.ArgumentParser(prog="python -m experiments.sets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="between an image folder, WebDataset shards and Parquet")
    c.add_argument("src", help="image folder (+ prompts.csv, or SET/images + SET/prompts.csv), shards, or .parquet")
    c.add_argument("--out", required=True, help="output folder (or a .parquet path with --to parquet)")
    c.add_argument("--to", choices=TARGETS, default=None, help="target (default: shards -> folder, else shards)")
    c.add_argument("--shard-size", type=int, default=1000)
    c.add_argument("--skip-bad", action="store_true", help="leave out undecodable images (counted)")
    c.add_argument("--workers", type=int, default=0, help="DataLoader workers that decode-check the images")
    args = ap.parse_args(argv)
    info = convert(args.src, args.out, args.to, args.shard_size, args.skip_bad, args.workers)
    if info.get("skipped"):
        print(f"skipped {info['skipped']} bad image(s)")
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
