"""``python -m experiments.generate --prompts BANK_DIR|FILE... --out SET --n N [...]``: an image-prompt set
made with Stable Diffusion, as WebDataset shards + prompts.csv + manifest.json."""

from __future__ import annotations

import argparse
import json

from promptblend.cli import entry_point

from . import (
    BACKENDS,
    DEFAULT_MODEL,
    FORMATS,
    SCHEDULERS,
    GenerateConfig,
    choose_prompts,
    generate_set,
    resolve_model,
)
from .dryrun import dry_run, format_estimate
from .prompts import SAMPLERS
from .schedulers import DEFAULT_SCHEDULER, DEFAULT_STEPS


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m experiments.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", required=True, help="a bank folder (index.build) or prompt files")
    ap.add_argument("--out", required=True, help="output set folder (shards, prompts.csv, manifest.json)")
    ap.add_argument("--n", type=int, required=True, help="number of prompts")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="hub id, diffusers folder, or 'tiny' (random twin)")
    ap.add_argument("--seeds-per-prompt", type=int, default=1)
    ap.add_argument("--scheduler", choices=list(SCHEDULERS), default=DEFAULT_SCHEDULER,
                    help="sampler: dpm++ (DPM-Solver++ 2M), ddim, euler-a, unipc or default (the model's own)")
    ap.add_argument("--karras", action="store_true", help="Karras sigma spacing (dpm++, unipc)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--size", type=int, default=None, help="stored pixels per side (default 512; 64 for tiny)")
    ap.add_argument("--render-size", type=int, default=None,
                    help="rendered pixels per side, reduced to --size with Lanczos (antialiased); default --size")
    ap.add_argument("--format", choices=list(FORMATS), default="png", help="png, or webp (lossless)")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--exclude", nargs="+", default=[], metavar="SET|CSV",
                    help="sets or prompt files whose near-duplicates must not be chosen")
    ap.add_argument("--exclude-cos", type=float, default=None,
                    help="cosine (MiniLM) at which a prompt is excluded (default: --dedup-cos, else 0.8)")
    ap.add_argument("--dedup-cos", type=float, default=None,
                    help="keep no two chosen prompts at or above this cosine (MiniLM, FAISS), e.g. 0.9")
    ap.add_argument("--sample", choices=SAMPLERS, default="random")
    ap.add_argument("--seed", type=int, default=0, help="prompt sampling seed")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    ap.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                    help="fp16 weights (default: on with CUDA; refused on CPU)")
    ap.add_argument("--sdpa", action=argparse.BooleanOptionalAction, default=True,
                    help="PyTorch scaled-dot-product attention (default on; --no-sdpa: diffusers' classic attention)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format for the UNet")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (first batch pays the compile)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (CPU pixels can differ by a level between thread counts; Ray CPU actors use 1)")
    ap.add_argument("--backend", choices=BACKENDS, default="local")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local Ray)")
    ap.add_argument("--dry-run", action="store_true",
                    help="time one batch on the device, print images, shards, disk and hours; write nothing")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def config_from(args: argparse.Namespace) -> GenerateConfig:
    """The set's settings from parsed arguments (checked: a bad value fails before any work)."""
    size = args.size or (64 if args.model == "tiny" else 512)
    config = GenerateConfig(
        model=args.model, seeds_per_prompt=args.seeds_per_prompt, scheduler=args.scheduler, karras=args.karras,
        steps=args.steps, guidance=args.guidance, size=size, render_size=args.render_size, format=args.format,
        negative_prompt=args.negative_prompt, fp16=args.fp16, shard_size=args.shard_size,
        batch_size=args.batch_size, device=args.device, sdpa=args.sdpa, channels_last=args.channels_last,
        compile=args.compile,
    )
    return config.resolved()


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: choose prompts, then generate the set (or, with ``--dry-run``, estimate it)."""
    args = _parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = config_from(args)
    resolve_model(args.model)  # a missing model fails before any work
    exclude_cos = args.exclude_cos if args.exclude_cos is not None else (args.dedup_cos or 0.8)
    prompts, stats = choose_prompts(args.prompts, args.n, args.sample, args.exclude, exclude_cos, args.seed,
                                    dedup_cos=args.dedup_cos)
    if "dedup" in stats:
        print("dedup:", json.dumps(stats["dedup"]))
    if "exclude" in stats:
        print("exclude:", json.dumps(stats["exclude"]))
    if args.dry_run:
        print(format_estimate(dry_run(prompts, config)))
        return 0
    manifest = generate_set(prompts, args.out, config, backend=args.backend, ray_address=args.ray_address,
                            progress=not args.quiet, extra_manifest={"prompts": stats})
    print(f"{args.out}: {manifest['n_images']} images in {manifest['shards']} shards "
          f"({manifest['shards_made']} made, {manifest['wall_time_s']} s; {config.scheduler} {config.steps} steps, "
          f"{config.render_size} -> {config.size} px {config.format})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
