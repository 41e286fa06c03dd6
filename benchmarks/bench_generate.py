"""Tiny-pipeline generation speed: images/s of experiments.generate's shard maker (local backend).

``python benchmarks/bench_generate.py [--n 32] [--size 64] [--steps 10] [--batch-size 8] [--threads 2]
[--device cpu|cuda]``

Builds the tiny Stable Diffusion twin once (timed apart), then makes ``--n`` images of distinct prompts
in batches and prints images/s for generation alone and with PNG encoding + shard writing, and the
load average (shared cores move absolute numbers).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from promptblend.cli import entry_point


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Time the tiny pipeline and print images/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    import torch

    from experiments.generate import (
        GenerateConfig,
        ShardMaker,
        generate_set,
        plan_items,
    )

    torch.set_num_threads(args.threads)
    cfg = GenerateConfig(model="tiny", steps=args.steps, size=args.size, batch_size=args.batch_size,
                         shard_size=args.n, device=args.device)
    prompts = [f"a photo of object number {i}, studio light" for i in range(args.n)]
    t0 = time.perf_counter()
    maker = ShardMaker(cfg)
    build = time.perf_counter() - t0
    maker.make(plan_items(prompts[: args.batch_size], 1))  # warm-up batch (first-call costs)
    t0 = time.perf_counter()
    maker.make(plan_items(prompts, 1))
    gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_set(prompts, Path(tmp) / "set", cfg, progress=False)
        whole = time.perf_counter() - t0
    print(f"tiny SD twin on {args.device}, {args.n} images of {args.size}px, {args.steps} steps, batch "
          f"{args.batch_size}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"  pipeline build {build:.1f} s")
    print(f"  generation:                 {args.n / gen:6.2f} img/s ({gen:.1f} s)")
    print(f"  generate_set (build+shards): {args.n / whole:6.2f} img/s ({whole:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
