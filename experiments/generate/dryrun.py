"""``--dry-run``: what a set would cost, from one timed batch on the chosen device; writes nothing."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

#: Bytes a tar member costs besides its data: a 512-byte header, data padded to 512-byte blocks.
TAR_BLOCK = 512


def _tar_bytes(sample: dict) -> int:
    """Bytes ``sample`` takes in a tar shard (each member: header plus padded data)."""
    import json

    total = 0
    for k, v in sample.items():
        if k.startswith("__"):
            continue
        size = len(v if isinstance(v, bytes) else (json.dumps(v) if isinstance(v, dict) else str(v)).encode())
        total += TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK
    return total


def dry_run(prompts: Sequence[str], config) -> dict:
    """Build the pipeline, warm it up on one image, time one batch of the set's first images, and scale up:
    images, shards, disk bytes and hours for the whole set on this device."""
    from . import ShardMaker, plan_items

    config = config.resolved()
    items = plan_items(prompts, config.seeds_per_prompt)
    t0 = time.perf_counter()
    maker = ShardMaker(config)
    build = time.perf_counter() - t0
    probe = items[: config.batch_size]
    maker.make(probe[:1])  # first-call costs (kernels, allocator, compile) are not the rate
    t0 = time.perf_counter()
    samples = maker.make(probe)
    per_image = (time.perf_counter() - t0) / len(samples)
    per_sample = sum(_tar_bytes(s) for s in samples) / len(samples)
    n = len(items)
    return {
        "images": n, "prompts": len(prompts), "shards": math.ceil(n / config.shard_size), "device": config.device,
        "timed_images": len(samples), "seconds_per_image": per_image, "images_per_s": 1.0 / per_image,
        "bytes_per_image": per_sample, "disk_bytes": per_sample * n, "hours": n * per_image / 3600,
        "pipeline_build_s": build,
    }


def format_estimate(est: dict) -> str:
    """The dry run's report lines."""
    return (
        f"dry run on {est['device']} (timed {est['timed_images']} images; nothing written):\n"
        f"  images {est['images']} ({est['prompts']} prompts) in {est['shards']} shards\n"
        f"  {est['images_per_s']:.3f} img/s -> estimated {est['hours']:.3f} hours\n"
        f"  disk {est['disk_bytes'] / 2**30:.3f} GiB ({est['bytes_per_image'] / 1024:.1f} KiB per image)"
    )
