"""predictors.run with ``--backend ray`` (a local Ray: one actor per node) vs the local runner on the same cores.

``python benchmarks/bench_run_ray.py [--n 2000] [--images DIR] [--predictor clip-regressor-tiny]
[--shard-size 256] [--cpus 2]``

The set is ``--n`` images (drawbench JPEGs cycled with new ids) as shards. The local runner uses
``--cpus`` torch threads and one DataLoader worker; Ray (a local instance started by
:mod:`promptblend.executors`, timed apart: a cluster is usually running already) runs one actor per
node with all its CPUs, which builds the model once. Actor start, imports, model build and all
inference count. Prints both wall times, the ratio and the overhead
(goal: Ray overhead <= 15%), checks the rows agree to 1e-5, and prints the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from promptblend.cli import entry_point

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Time both backends on the same shards and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--predictor", default="clip-regressor-tiny")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="ray runs; local runs one more, around them")
    args = ap.parse_args(argv)
    import torch
    from bench_shards import make_folder

    from experiments.sets import convert
    from predictors.run import run_predictor
    from promptblend.executors import open_executor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        convert(make_folder(args.images, args.n, tmp / "folder"), tmp / "set", shard_size=args.shard_size)
        t0 = time.perf_counter()
        with open_executor("ray"):  # the local Ray instance every ray run below connects to
            ray_start = time.perf_counter() - t0
            torch.set_num_threads(args.cpus)
            times, runs = {}, {}
            order = ["local", *["ray", "local"] * args.repeats]  # alternating: medians damp drift in load
            for backend in order:
                t0 = time.perf_counter()
                run = run_predictor(args.predictor, tmp / "set", tmp / f"runs-{backend}-{len(times.get(backend, []))}",
                                    workers=1 if backend == "local" else None,  # an actor picks its own
                                    shard_size=args.shard_size, backend=backend, progress=False)
                times.setdefault(backend, []).append(time.perf_counter() - t0)
                runs.setdefault(backend, []).append(run)
    local, remote = float(np.median(times["local"])), float(np.median(times["ray"]))
    setup = float(np.median([r.meta["setup_s"] for r in runs["ray"]]))
    runs = {k: v[0] for k, v in runs.items()}
    err = float(np.abs(runs["local"].embeddings - runs["ray"].embeddings).max())
    print(f"{args.predictor}, {args.n} images in shards of {args.shard_size}, {args.cpus} cores, "
          f"load average {os.getloadavg()[0]:.2f}; ray start {ray_start:.1f} s (not counted)")
    print(f"  local runner ({args.cpus} threads, 1 loader worker): {local:7.1f} s  (runs: "
          + ", ".join(f"{t:.1f}" for t in times["local"]) + ")")
    print(f"  ray ({runs['ray'].meta['actors']} actor(s), one per node):      {remote:7.1f} s  (runs: "
          + ", ".join(f"{t:.1f}" for t in times["ray"]) + f"; actor start + imports + model build {setup:.1f} s)")
    print(f"ratio ray/local {remote / local:.3f}  overhead {100 * (remote / local - 1):+.1f}%  (goal <= +15%); "
          f"max |row difference| {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
