"""Images/s of each tiny predictor: the batched runner (DataLoader workers) vs one image at a time.

``python benchmarks/bench_predictors.py [--images DIR] [--n 64] [--batch-size 32] [--workers W]
[--threads T] [--device cpu|cuda] [--predictors NAME ...]``

Both ways run in the same process on the same predictor object (models built once, label embeddings
cached, one warm-up call each), so the ratio is what batching buys.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from promptblend.cli import entry_point
from promptblend.imagesets import ImageSet, open_image_set

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"


def tiny_entries() -> list[str]:
    """Registered ``*-tiny`` entries that need no extra inputs (index, source...)."""
    from predictors.registry import get_predictor_config, list_predictors

    return [n for n in list_predictors() if n.endswith("-tiny") and not get_predictor_config(n).get("requires")]


def bench_one(name: str, images: ImageSet, batch_size: int, workers: int, device: str | None) -> dict:
    """Time the batched pipeline and a one-image loop for predictor ``name``."""
    from predictors.registry import create_predictor
    from predictors.run import predict_image_set

    predictor = create_predictor(name)
    if device is not None:
        predictor.device = device
    t0 = time.perf_counter()
    predictor.ensure_setup()
    setup = time.perf_counter() - t0
    warm = images.subset(range(2))
    predict_image_set(predictor, warm, batch_size, 0, progress=False)
    predictor.predict([images.load(0)])

    t0 = time.perf_counter()
    predict_image_set(predictor, images, batch_size, workers, progress=False)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(images)):
        predictor.predict([images.load(i)])
    single = time.perf_counter() - t0
    n = len(images)
    return {"name": name, "setup_s": setup, "batched": n / batched, "single": n / single, "ratio": single / batched}


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=64, help="images timed per predictor")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: runner default)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--predictors", nargs="+", default=None)
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from rich.console import Console
    from rich.table import Table

    from predictors.run import default_workers

    if args.threads:
        torch.set_num_threads(args.threads)
    full = open_image_set(args.images)
    images = full.subset(range(min(args.n, len(full))))
    workers = default_workers() if args.workers is None else args.workers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = [bench_one(n, images, args.batch_size, workers, device) for n in (args.predictors or tiny_entries())]
    table = Table(title=f"{len(images)} images, batch {args.batch_size}, {workers} workers, {torch.get_num_threads()} "
                        f"threads, {device}")
    for col in ("predictor", "setup s", "batched img/s", "one-at-a-time img/s", "speed-up"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['setup_s']:.1f}", f"{r['batched']:.1f}", f"{r['single']:.1f}", f"{r['ratio']:.1f}x")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
