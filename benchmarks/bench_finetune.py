"""Fine-tuning clip-regressor: is the image loader the bottleneck, and what does gradient checkpointing save?

``python benchmarks/bench_finetune.py [loader|memory|all] [--images DIR] [--n N] [--source shards|folder|parquet]
[--model NAME] [--steps N] [--batch-size B] [--workers W] [--threads T] [--memory-model ViT-B-16]
[--memory-batch 16] [--device cpu|cuda]``

``loader``: training images/s of the same fine-tune steps fed (a) by the training loader streaming the
first ``--n`` images as ``--source`` (default: WebDataset shards of 16, converted with experiments.sets):
the one batch dataset of :mod:`promptblend.imagesets.batches`, decode + CLIP transform in ``--workers``
DataLoader workers, in the loop's :class:`BatchPlan` order (shard by shard) and (b) by the same images
pre-decoded into memory; prints both and their ratio (goal >= 0.9: the loader keeps up).
``memory``: peak memory of one fine-tune step (forward, backward, AdamW) of ``--memory-model`` with
random weights, with and without gradient checkpointing, each in a fresh process (CPU: peak RSS above
the built model; CUDA: ``torch.cuda.max_memory_allocated``); prints both and their ratio.

Measured on the shared 2-core CPU machine (load average ~10, no GPU), drawbench's 400 512px JPEGs:
``memory``: ViT-B-16, batch 16: 2101.6 MiB without vs 1167.4 MiB with checkpointing (0.555; 51 s vs
77 s per step). ``loader --model ViT-B-32 --batch-size 16 --n 48 --steps 2 --workers 1`` (random-weight
ViT-B-32, 48 images as 3 shards of 16, load average 15-19): 0.23 vs 0.20 images/s (1.19; an earlier run
with 3 steps: 1.15), about 9 minutes; ``loader --n 48 --steps 4 --batch-size 8 --workers 1 --threads 1``
(tiny 64px tower): 25.1 vs 97.9 images/s (0.26): a tiny tower is cheaper than decoding a 512px image,
so there the decoding worker, not the model, sets the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from promptblend.cli import entry_point

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"
#: Untimed steps before the loader benchmark's clock starts.
WARMUP = 1


def _model(name: str, device: str, grad_checkpointing: bool = False):
    """A fine-tunable regressor on a random-weight tower of ``name``, its transform and AdamW."""
    import torch

    from predictors.clip_regressor.model import (
        FinetunedRegressor,
        RegressorHead,
        RegressorTask,
        new_tower,
    )
    from predictors.training import TrainConfig
    from predictors.training.optim import make_optimizer

    visual, preprocess = new_tower(name, None)
    visual.set_grad_checkpointing(grad_checkpointing)
    model = FinetunedRegressor(visual, RegressorHead(visual.output_dim, 1024, 0.0)).to(device).train()
    cfg = TrainConfig(finetune=True, lr=1e-5, head_lr=1e-3, llrd=0.8)
    opt = make_optimizer(RegressorTask({}).param_groups(model, cfg), cfg.lr, cfg.weight_decay)
    torch.manual_seed(0)
    return model, preprocess, opt


def _step(model, opt, pixels, targets) -> None:
    from predictors.clip_regressor.model import cosine_loss

    loss = cosine_loss(model(pixels), targets)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def streamed_copy(images: Path, n: int, source: str, tmp: Path):
    """The first ``n`` images of ``images`` written as ``source`` (shards of 16, Parquet, or a folder) and opened."""
    from experiments.sets import convert
    from promptblend.imagesets import open_image_set

    first = open_image_set(images).subset(range(n))
    info = convert(first, tmp / source, to=source, shard_size=16)
    return open_image_set(info.get("file", tmp / source))


def bench_loader(images: Path, name: str, steps: int, batch_size: int, workers: int, device: str,
                 n_images: int, source: str, tmp: Path) -> dict:
    """Images/s of ``steps`` fine-tune steps from the streaming loader vs from pre-decoded tensors."""
    import torch

    from predictors.training.data import (
        BatchPlan,
        StepSampler,
        image_batches,
        loader,
        pixel_batches,
    )

    image_set = streamed_copy(images, n_images, source, tmp)
    n = len(image_set)
    targets = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    model, preprocess, opt = _model(name, device)
    plan = BatchPlan(n, batch_size, seed=0, groups=image_set.groups)

    def run(batches) -> float:
        it = iter(batches)
        for _ in range(WARMUP):  # workers start, first allocations
            x, y = next(it)
            _step(model, opt, x.to(device), y.to(device))
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(it)
            _step(model, opt, x.to(device), y.to(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - t0)

    order = StepSampler(plan, 0, steps + WARMUP)
    streaming = run(loader(pixel_batches(image_set, range(n), order, preprocess, targets=targets), workers))
    pixels = torch.cat(list(loader(image_batches(image_set, range(n), preprocess, 64), 0)))  # decoded once, in memory
    tensors = torch.from_numpy(targets)

    def memory_batches():
        for step in range(steps + WARMUP):
            keys = np.concatenate(plan.micro_batches(step)) % n
            yield pixels[keys], tensors[keys]

    in_memory = run(memory_batches())
    return {"images": n, "source": source, "model": name, "batch_size": batch_size, "workers": workers, "steps": steps,
            "streaming_images_per_s": round(streaming, 2), "in_memory_images_per_s": round(in_memory, 2),
            "ratio": round(streaming / in_memory, 3)}


def _peak_child(name: str, batch_size: int, grad_checkpointing: bool, device: str) -> None:
    """In a fresh process: print the peak memory of one step above the built model (MiB)."""
    import torch

    model, _, opt = _model(name, device, grad_checkpointing)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    pixels = torch.randn(batch_size, 3, size, size, device=device)
    targets = torch.randn(batch_size, 384, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(model, opt, pixels, targets)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        _step(model, opt, pixels, targets)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_mib": round(peak / 2**20, 1), "step_s": round(time.perf_counter() - t0, 2)
                      if not device.startswith("cuda") else None}))


def bench_memory(name: str, batch_size: int, device: str) -> dict:
    """Peak step memory with and without gradient checkpointing (one fresh process each)."""
    out = {"model": name, "batch_size": batch_size, "device": device}
    for ckpt in (False, True):
        cmd = [sys.executable, __file__, "_peak", "--memory-model", name, "--memory-batch", str(batch_size),
               "--device", device] + (["--grad-checkpointing"] if ckpt else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        out["with_checkpointing" if ckpt else "without_checkpointing"] = json.loads(done.stdout.strip().splitlines()[-1])
    out["ratio"] = round(out["with_checkpointing"]["peak_mib"] / out["without_checkpointing"]["peak_mib"], 3)
    return out


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", choices=("loader", "memory", "all", "_peak"))
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--model", default="pb-tiny-clip", help="tower of the loader benchmark (random weights)")
    p.add_argument("--n", type=int, default=96, help="images the loader benchmark streams")
    p.add_argument("--source", choices=("shards", "folder", "parquet"), default="shards")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-model", default="ViT-B-16")
    p.add_argument("--memory-batch", type=int, default=16)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    import torch

    from promptblend.clip import register_clip_configs

    register_clip_configs()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "_peak":
        _peak_child(a.memory_model, a.memory_batch, a.grad_checkpointing, a.device)
        return 0
    if a.what in ("loader", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(bench_loader(a.images, a.model, a.steps, a.batch_size, a.workers, a.device, a.n,
                                          a.source, Path(tmp))))
    if a.what in ("memory", "all"):
        print(json.dumps(bench_memory(a.memory_model, a.memory_batch, a.device)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
