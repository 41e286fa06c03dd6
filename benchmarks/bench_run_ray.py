"""predictors.run with ``--backend ray`` (a local Ray: one actor per node) vs the local runner on the same cores.

``python benchmarks/bench_run_ray.py [--n 2000] [--images DIR] [--predictor clip-regressor-tiny]
[--shard-size 256] [--cpus 2]``

The set is ``--n`` images (drawbench JPEGs cycled with new ids) as shards. The local runner uses
``--cpus`` torch threads and one DataLoader worker; Ray (a local instance started by
:mod:`promptblend.executors`, timed apart: a cluster is usually running already) runs one actor per
node with all its CPUs, which builds the model once. Two Ray modes: the default on a local instance,
where the driver computes shards while the actors start, and actors only
(``PROMPTBLEND_RAY_DRIVER_HELPS=0``, the mode on a cluster the driver joins). Actor start, imports, model
build and all inference count. Prints the wall times, the ratios and the overheads (goal: Ray overhead
<= 15%), the rows the driver computed, checks the rows agree to 1e-5, and prints the load average.
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
    from promptblend.executors import DRIVER_HELPS_ENV, open_executor

    modes = {"local": ("local", None), "ray": ("ray", None), "ray-actors": ("ray", "0")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        convert(make_folder(args.images, args.n, tmp / "folder"), tmp / "set", shard_size=args.shard_size)
        t0 = time.perf_counter()
        with open_executor("ray"):  # the local Ray instance every ray run below connects to
            ray_start = time.perf_counter() - t0
            torch.set_num_threads(args.cpus)
            times, runs = {}, {}
            order = ["local", *["ray", "ray-actors", "local"] * args.repeats]  # alternating: medians damp drift in load
            for mode in order:
                backend, helps = modes[mode]
                os.environ.pop(DRIVER_HELPS_ENV, None)
                if helps is not None:
                    os.environ[DRIVER_HELPS_ENV] = helps
                t0 = time.perf_counter()
                run = run_predictor(args.predictor, tmp / "set", tmp / f"runs-{mode}-{len(times.get(mode, []))}",
                                    workers=1 if backend == "local" else None,  # an actor picks its own
                                    shard_size=args.shard_size, backend=backend, progress=False)
                times.setdefault(mode, []).append(time.perf_counter() - t0)
                runs.setdefault(mode, []).append(run)
            os.environ.pop(DRIVER_HELPS_ENV, None)
    median = {mode: float(np.median(t)) for mode, t in times.items()}
    print(f"{args.predictor}, {args.n} images in shards of {args.shard_size}, {args.cpus} cores, "
          f"load average {os.getloadavg()[0]:.2f}; ray start {ray_start:.1f} s (not counted)")
    print(f"  local runner ({args.cpus} threads, 1 loader worker): {median['local']:7.1f} s  (runs: "
          + ", ".join(f"{t:.1f}" for t in times["local"]) + ")")
    for mode, label in (("ray", "driver helps while actors start"), ("ray-actors", "actors only")):
        first = runs[mode][0]
        setup = float(np.median([r.meta["setup_s"] for r in runs[mode]]))
        on_driver = float(np.median([r.meta["rows_on_driver"] for r in runs[mode]]))
        err = float(np.abs(runs["local"][0].embeddings - first.embeddings).max())
        print(f"  {mode} ({first.meta['actors']} actor(s); {label}): {median[mode]:7.1f} s  (runs: "
              + ", ".join(f"{t:.1f}" for t in times[mode]) + f"; pool ready {setup:.1f} s; "
              f"rows on the driver {on_driver:.0f} of {args.n}; max |row difference| {err:.2e})")
        print(f"ratio {mode}/local {median[mode] / median['local']:.3f}  "
              f"overhead {100 * (median[mode] / median['local'] - 1):+.1f}%  (goal <= +15%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
