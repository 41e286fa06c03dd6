"""The Stable Diffusion pipeline of a set and the shard maker: render, resize, encode.

Images are rendered at ``render_size`` and, when ``size`` is smaller, resized with Pillow's Lanczos filter
(antialiased when reducing, as the competition host's 768 -> 512 px images were); stored as PNG or
lossless WebP. CUDA options (``GenerateConfig``): fp16 weights, SDPA attention, a channels-last UNet and
``torch.compile`` of the UNet; only the precision is recorded in the set (the others change speed, not the
recipe).
"""

from __future__ import annotations

import io
from collections.abc import Callable

from promptblend.errors import ModelNotFoundError

from .schedulers import make_scheduler

#: What ``--format`` stores, and Pillow's save options for each (WebP lossless, not Pillow's lossy default).
FORMATS = {"png": {"format": "png"}, "webp": {"format": "webp", "lossless": True, "quality": 80, "method": 4}}


def load_pipeline(config):
    """A ``StableDiffusionPipeline`` for a resolved ``GenerateConfig``: its model, scheduler, device and CUDA
    options, safety checker off."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from experiments.sd_tiny import TINY, tiny_components

    model = config.model
    dtype = torch.float16 if config.fp16 else torch.float32
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        if model == TINY:
            pipe = StableDiffusionPipeline(**tiny_components(), **extra)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, **extra)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load Stable Diffusion model {model}: {e}") from e
    pipe.scheduler = make_scheduler(config.scheduler, pipe.scheduler, config.karras)
    pipe = pipe.to(config.device, dtype) if config.fp16 else pipe.to(config.device)
    pipe.unet.set_attn_processor(AttnProcessor2_0() if config.sdpa else AttnProcessor())
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.compile:
        pipe.unet = torch.compile(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def store_image(image, size: int, fmt: str) -> bytes:
    """``image`` resized to ``size`` (Lanczos, antialiased) when it is larger, encoded as ``fmt``."""
    from PIL import Image

    if image.width != size or image.height != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, **FORMATS[fmt])
    return buf.getvalue()


class ShardMaker:
    """Builds the pipeline once, then turns a shard's items into its samples (image bytes, prompt, JSON)."""

    def __init__(self, config) -> None:
        self.config = config.resolved()
        self.pipe = load_pipeline(self.config)

    def make(self, items: list[dict], done: Callable[[int], object] | None = None) -> list[dict]:
        """Samples for ``items`` in batches, one seeded generator per image; ``done(n)`` after each batch."""
        import torch

        cfg, out = self.config, []
        settings = cfg.settings()
        for start in range(0, len(items), cfg.batch_size):
            batch = items[start : start + cfg.batch_size]
            images = self.pipe(
                [it["prompt"] for it in batch], num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                height=cfg.render_size, width=cfg.render_size,
                negative_prompt=[cfg.negative_prompt] * len(batch) if cfg.negative_prompt else None,
                generator=[torch.Generator("cpu").manual_seed(it["seed"]) for it in batch],
            ).images
            for it, image in zip(batch, images):
                meta = {"seed": it["seed"], "seed_index": it["seed_index"], **settings}
                out.append({"__key__": it["key"], cfg.format: store_image(image, cfg.size, cfg.format),
                            "txt": it["prompt"], "json": meta})
            if done is not None:
                done(len(batch))
        return out
