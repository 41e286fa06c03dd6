"""``python -m experiments.generate --prompts BANK_DIR|FILE... --out SET --n N [...]``: an image-prompt set
made with Stable Diffusion, as WebDataset shards + prompts.csv + manifest.json."""

from __future__ import annotations

import argparse
import json

from promptblend.cli import entry_point

from . import (
    BACKENDS,
    DEFAULT_MODEL,
    GenerateConfig,
    choose_prompts,
    generate_set,
    resolve_model,
)
from .prompts import SAMPLERS


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m experiments.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", required=True, help="a bank folder (index.build) or prompt files")
    ap.add_argument("--out", required=True, help="output set folder (shards, prompts.csv, manifest.json)")
    ap.add_argument("--n", type=int, required=True, help="number of prompts")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="hub id, diffusers folder, or 'tiny' (random twin)")
    ap.add_argument("--seeds-per-prompt", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--size", type=int, default=None, help="pixels per side (default 512; 64 for tiny)")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--exclude", nargs="+", default=[], metavar="SET|CSV",
                    help="sets or prompt files whose near-duplicates must not be chosen")
    ap.add_argument("--exclude-cos", type=float, default=0.8, help="cosine (MiniLM) at which a prompt is excluded")
    ap.add_argument("--sample", choices=SAMPLERS, default="random")
    ap.add_argument("--seed", type=int, default=0, help="prompt sampling seed")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (CPU pixels can differ by 1/255 between thread counts; Ray CPU actors use 1)")
    ap.add_argument("--backend", choices=BACKENDS, default="local")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local Ray)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: choose prompts, then generate the set."""
    args = _parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    resolve_model(args.model)  # a missing model fails before any work
    size = args.size or (64 if args.model == "tiny" else 512)
    config = GenerateConfig(model=args.model, seeds_per_prompt=args.seeds_per_prompt, steps=args.steps,
                            guidance=args.guidance, size=size, negative_prompt=args.negative_prompt,
                            shard_size=args.shard_size, batch_size=args.batch_size, device=args.device)
    prompts, stats = choose_prompts(args.prompts, args.n, args.sample, args.exclude, args.exclude_cos, args.seed)
    manifest = generate_set(prompts, args.out, config, backend=args.backend, ray_address=args.ray_address,
                            progress=not args.quiet, extra_manifest={"prompts": stats})
    print(f"{args.out}: {manifest['n_images']} images in {manifest['shards']} shards "
          f"({manifest['shards_made']} made, {manifest['wall_time_s']} s)")
    if "exclude" in stats:
        print("exclude:", json.dumps(stats["exclude"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
