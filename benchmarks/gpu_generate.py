"""Prepared GPU figure (not yet measured: no device was lent): images/s of ``experiments.generate``'s shard
maker with each CUDA option on and off, for Stable Diffusion 2 base-sized random weights.

``python benchmarks/gpu_generate.py [--render-size 768] [--size 512] [--steps 20] [--batch-size 4] [--images 8]
[--arch sd2-base|tiny] [--device cuda]``

Builds SD 2 base-sized components from their configs (UNet 320/640/1280/1280 with linear projections and
1024-d cross attention, the SD VAE, a 23-layer 1024-d CLIP text model; random weights, fp16 on disk) into a
temp folder, then for each variant loads it through ``experiments.generate``'s own ``load_pipeline``
(DPM-Solver++, rendered at ``--render-size``, stored at ``--size`` as PNG), warms up one batch (which also
pays ``torch.compile``), and times ``--images`` images. Variants: the default (fp16, SDPA, no channels-last,
no compile), then each option flipped. Ratios are against the default, in the same process.
``--arch tiny --device cpu`` runs the same script on the tiny twin (a check that it works, not a figure).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from promptblend.cli import entry_point

#: Default, then one option flipped at a time.
VARIANTS = {
    "default (fp16, sdpa)": {},
    "fp32": {"fp16": False},
    "classic attention": {"sdpa": False},
    "channels-last": {"channels_last": True},
    "torch.compile": {"compile": True},
}


def sd2_base_folder(folder: Path) -> Path:
    """Save a random-weight pipeline with Stable Diffusion 2 base's shapes (fp16) into ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from experiments.sd_tiny import VOCAB_SIZE, tokenizer_files

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
        num_hidden_layers=23, projection_dim=1024, hidden_act="gelu", max_position_embeddings=77,
        bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1, pad_token_id=VOCAB_SIZE - 1,
    ))
    tok = tokenizer_files()
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text,
        tokenizer=CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def time_variant(config, items: list[dict]) -> float:
    """Images/s of ``config``'s shard maker on ``items`` after one warm-up batch."""
    import torch

    from experiments.generate import ShardMaker

    maker = ShardMaker(config)
    maker.make(items[: config.batch_size])
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    maker.make(items)
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - t0)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Print images/s per CUDA option."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("sd2-base", "tiny"), default="sd2-base")
    ap.add_argument("--render-size", type=int, default=768)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default: all)")
    args = ap.parse_args(argv)
    import torch

    from experiments.generate import GenerateConfig, plan_items

    cuda = args.device.startswith("cuda")
    items = plan_items([f"a photo of object number {i}, studio light" for i in range(args.images)], 1)
    with tempfile.TemporaryDirectory() as tmp:
        model = "tiny" if args.arch == "tiny" else str(sd2_base_folder(Path(tmp) / "sd2-base-random"))
        base = GenerateConfig(model=model, scheduler="dpm++", steps=args.steps, size=args.size,
                              render_size=args.render_size, batch_size=args.batch_size, device=args.device,
                              fp16=cuda)
        name = torch.cuda.get_device_name() if cuda else "cpu"
        print(f"{args.arch} random weights on {name}: {args.images} images, render {args.render_size} -> "
              f"{args.size} px, DPM-Solver++ {args.steps} steps, batch {args.batch_size}")
        rates = {}
        for variant, change in VARIANTS.items():
            if args.only and variant not in args.only or (not cuda and change.get("fp16") is False):
                continue
            rates[variant] = time_variant(replace(base, **change), items)
            first = next(iter(rates.values()))
            print(f"  {variant:22s} {rates[variant]:8.3f} img/s  ({rates[variant] / first:.2f}x the first row)",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
