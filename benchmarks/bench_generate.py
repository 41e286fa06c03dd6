"""Generation figures: per-image time of the schedulers on the tiny twin, and WebP lossless vs PNG on real images.

``python benchmarks/bench_generate.py schedulers [--size 64] [--batch-size 4] [--n 8] [--repeats 3] [--threads 2]``
    per-image time of DDIM at 50 steps and DPM-Solver++ at 20 steps (same size, batch and prompts), each
    measured ``--repeats`` times interleaved (the best of each kept: shared cores add noise, never remove
    work), in wall time and in this process's CPU time (which other load barely moves), and their ratio (the step ratio is 2.5x; text encoding, VAE decoding and PNG encoding are
    what is left).
``python benchmarks/bench_generate.py formats [--images /work/shared/data/drawbench-sd1/images] [--n 200]``
    bytes per image and encode/decode time of lossless WebP against PNG, with ``experiments.generate``'s
    own encoder options, on real Stable Diffusion images (decoded to RGB first).
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

from promptblend.cli import entry_point

DRAWBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"


def schedulers(args: argparse.Namespace) -> None:
    """Per-image time of DDIM 50 steps and DPM-Solver++ 20 steps on the tiny twin."""
    import torch

    from experiments.generate import GenerateConfig, ShardMaker, plan_items

    torch.set_num_threads(args.threads)
    prompts = [f"a photo of object number {i}, studio light" for i in range(args.n)]
    items = plan_items(prompts, 1)
    runs = {"ddim-50": ("ddim", 50), "dpm++-20": ("dpm++", 20)}
    makers = {name: ShardMaker(GenerateConfig(model="tiny", scheduler=s, steps=k, size=args.size,
                                              batch_size=args.batch_size, device="cpu"))
              for name, (s, k) in runs.items()}
    for maker in makers.values():
        maker.make(items[: args.batch_size])  # warm-up (first-call costs)
    best = {name: float("inf") for name in runs}
    cpu = {name: float("inf") for name in runs}  # CPU seconds of this process: robust to other load
    for _ in range(args.repeats):
        for name, maker in makers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            maker.make(items)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(items))
            cpu[name] = min(cpu[name], (time.process_time() - c0) / len(items))
    print(f"tiny SD twin on cpu, {args.n} images of {args.size}px, batch {args.batch_size}, {args.threads} threads, "
          f"best of {args.repeats}, load average {os.getloadavg()[0]:.2f}")
    for name in runs:
        print(f"  {name:9s} {best[name] * 1000:8.1f} ms/image wall  {cpu[name] * 1000:8.1f} ms/image CPU")
    print(f"  DDIM 50 / DPM-Solver++ 20 per-image time: wall {best['ddim-50'] / best['dpm++-20']:.2f}x, "
          f"CPU {cpu['ddim-50'] / cpu['dpm++-20']:.2f}x (step ratio 2.50x)")


def formats(args: argparse.Namespace) -> None:
    """Bytes per image and encode/decode time: lossless WebP vs PNG on real images."""
    from PIL import Image

    from experiments.generate.pipeline import FORMATS

    files = sorted(Path(args.images).glob("*"))[: args.n]
    rgb = []
    for f in files:
        with Image.open(f) as im:
            rgb.append(im.convert("RGB"))
    stats = {}
    for fmt, options in FORMATS.items():
        blobs, t0 = [], time.perf_counter()
        for im in rgb:
            buf = io.BytesIO()
            im.save(buf, **options)
            blobs.append(buf.getvalue())
        encode = (time.perf_counter() - t0) / len(rgb)
        t0 = time.perf_counter()
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
        decode = (time.perf_counter() - t0) / len(rgb)
        same = all(Image.open(io.BytesIO(b)).convert("RGB").tobytes() == im.tobytes() for b, im in zip(blobs[:20], rgb))
        stats[fmt] = (sum(map(len, blobs)) / len(blobs), encode, decode, same)
    size = rgb[0].size
    print(f"{len(rgb)} real SD images ({Path(args.images)}, {size[0]}x{size[1]}, decoded to RGB), "
          f"load average {os.getloadavg()[0]:.2f}")
    for fmt, (nbytes, enc, dec, same) in stats.items():
        print(f"  {fmt:5s} {nbytes / 1024:8.1f} KiB/image  encode {enc * 1000:7.1f} ms  decode {dec * 1000:6.2f} ms"
              f"  lossless: {same}")
    (pb, pe, pd, _), (wb, we, wd, _) = stats["png"], stats["webp"]
    print(f"  WebP/PNG: bytes {wb / pb:.3f}x, encode time {we / pe:.2f}x, decode time {wd / pd:.2f}x")


FIGURES = {"schedulers": schedulers, "formats": formats}


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Print the figure asked for."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figure", choices=list(FIGURES))
    ap.add_argument("--n", type=int, default=None, help="images (schedulers: 8; formats: 200)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", default=str(DRAWBENCH))
    args = ap.parse_args(argv)
    args.n = args.n or (8 if args.figure == "schedulers" else 200)
    FIGURES[args.figure](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
