"""predictors.run over the same images as a folder, as WebDataset shards and as Parquet, side by side in one run.

``python benchmarks/bench_shards.py [--images DIR] [--n N] [--predictor clip-regressor-tiny] [--workers W]
[--threads T] [--shard-size S] [--repeats R]``

The first ``--n`` images of ``--images`` (repeated with new ids when there are fewer) are copied to a
folder and converted (experiments.sets) to shards of ``--shard-size`` and to one Parquet (original bytes,
ids = stems). Each repeat runs the predictor over the three (rotating which goes first, fresh run
folders, so no cache hit), timing the set's opening (listing + content fingerprint) and the whole run.
Prints the median times and the time ratios shards / folder and Parquet / shards (goal: both <= 1.0,
no slower). Reports the load average: on shared cores the absolute times move with other work, the
side-by-side ratio less so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from promptblend.cli import entry_point

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"


def make_folder(src: Path, n: int, dst: Path) -> Path:
    """``n`` images of ``src`` copied into ``dst`` (cycled with new ids when ``src`` has fewer)."""
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    dst.mkdir(parents=True)
    for i in range(n):
        p = files[i % len(files)]
        shutil.copy(p, dst / f"{i:06d}{p.suffix.lower()}")
    return dst


def timed_run(name: str, images, out: Path, workers: int) -> tuple[float, float]:
    """(seconds to open the set, seconds for the whole uncached run)."""
    from predictors.run import run_predictor
    from promptblend.imagesets import open_image_set

    t0 = time.perf_counter()
    open_image_set(images).fingerprint()
    t1 = time.perf_counter()
    run = run_predictor(name, images, out, workers=workers, progress=False)
    assert not run.meta.get("cache_hit")
    return t1 - t0, time.perf_counter() - t1


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Run the side-by-side timing and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--predictor", default="clip-regressor-tiny")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from experiments.sets import convert

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_folder(args.images, args.n, tmp / "folder")
        sources = {"folder": folder, "shards": tmp / "shards",
                   "parquet": Path(convert(folder, tmp / "parquet", to="parquet")["file"])}
        convert(folder, sources["shards"], shard_size=args.shard_size)
        times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in sources}
        kinds = list(sources)
        for r in range(args.repeats):
            for kind in kinds[r % 3 :] + kinds[: r % 3]:
                times[kind].append(timed_run(args.predictor, sources[kind], tmp / f"runs-{kind}-{r}", args.workers))
    med = {k: (statistics.median(o for o, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
    print(f"{args.predictor}, {args.n} images, workers={args.workers}, threads={args.threads}, "
          f"shard size {args.shard_size}, {args.repeats} repeats, load average {os.getloadavg()[0]:.2f}")
    for kind, (open_s, run_s) in med.items():
        print(f"  {kind:7s}: open {open_s:6.2f} s   run {run_s:7.2f} s   {args.n / run_s:7.1f} img/s")
    for a, b in (("shards", "folder"), ("parquet", "shards")):
        print(f"ratio {a}/{b}: open {med[a][0] / med[b][0]:.2f}   run {med[a][1] / med[b][1]:.2f}  (goal: run <= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
