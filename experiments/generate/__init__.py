"""Make an image-prompt set with Stable Diffusion: WebDataset shards in img2dataset's layout.

``generate_set(prompts, out, GenerateConfig(...))`` writes ``out/images-000000.tar...`` (``KEY.png``,
``KEY.txt`` the prompt, ``KEY.json`` seed and settings), ``prompts.csv`` and, when every shard is done,
``manifest.json``. Shards are written atomically and a rerun makes only the missing ones; one
(prompt, seed) always gives the same PNG bytes, on the local backend or on Ray actors.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from promptblend import atomic
from promptblend.errors import ConfigError, ModelNotFoundError
from promptblend.shards import shard_name, write_shard

from .prompts import choose_prompts

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"
BACKENDS = ("local", "ray")
SHARD_PREFIX = "images"
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"

__all__ = ["DEFAULT_MODEL", "GenerateConfig", "choose_prompts", "generate_set", "plan_items", "resolve_model"]


@dataclass(frozen=True)
class GenerateConfig:
    """Settings that shape the images (all recorded in each ``KEY.json`` and the manifest)."""

    model: str = DEFAULT_MODEL
    seeds_per_prompt: int = 1
    steps: int = 50
    guidance: float = 7.5
    size: int = 512
    negative_prompt: str = ""
    shard_size: int = 256
    batch_size: int = 8
    device: str | None = None

    def settings(self) -> dict:
        """What a sample's ``.json`` records besides its seed (device and batching do not change pixels)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "batch_size", "shard_size")}


def resolve_model(model: str) -> str:
    """``tiny``, an existing local folder, or a hub id found in the local cache; else :class:`ModelNotFoundError`."""
    from experiments.sd_tiny import TINY

    if model == TINY or Path(model).expanduser().is_dir():
        return model
    if model.startswith((".", "/", "~")) or model.count("/") != 1:  # a path, not an ``owner/name`` hub id
        raise ModelNotFoundError(f"model path not found: {model} (give a diffusers folder, a hub id or 'tiny')")
    from huggingface_hub import try_to_load_from_cache

    if os.environ.get("HF_HUB_OFFLINE") and not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        raise ModelNotFoundError(f"model {model} is not in the local Hugging Face cache and the hub is offline; "
                                 "pass --model PATH (a diffusers folder) or --model tiny")
    return model


def load_pipeline(model: str, device: str | None = None):
    """A ``StableDiffusionPipeline`` on ``device`` (fp16 + SDPA attention on CUDA), safety checker off."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    from experiments.sd_tiny import TINY, tiny_components
    from promptblend.device import resolve_device

    device = resolve_device(device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        if model == TINY:
            pipe = StableDiffusionPipeline(**tiny_components(), **extra)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, **extra)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load Stable Diffusion model {model}: {e}") from e
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
    if device.startswith("cuda"):
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_seed(prompt: str, index: int) -> int:
    """Seed of a prompt's ``index``-th image: a hash of the text, so the same prompt gets the same images anywhere."""
    return (int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") + index) % (2**31)


def plan_items(prompts: Sequence[str], seeds_per_prompt: int) -> list[dict]:
    """One ``{"key", "prompt", "seed"}`` per image; keys are zero-padded row numbers (img2dataset style)."""
    return [{"key": f"{row:09d}", "prompt": p, "seed": prompt_seed(p, s)}
            for row, (p, s) in enumerate((p, s) for p in prompts for s in range(seeds_per_prompt))]


class ShardMaker:
    """Builds the pipeline once, then turns a shard's items into its samples (PNG bytes, prompt, JSON)."""

    def __init__(self, config: GenerateConfig) -> None:
        self.config = config
        self.pipe = load_pipeline(config.model, config.device)

    def make(self, items: list[dict]) -> list[dict]:
        """Samples for ``items``, generated in batches, one seeded generator per image."""
        import torch

        cfg, out = self.config, []
        for start in range(0, len(items), cfg.batch_size):
            batch = items[start : start + cfg.batch_size]
            images = self.pipe(
                [it["prompt"] for it in batch], num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                height=cfg.size, width=cfg.size, negative_prompt=[cfg.negative_prompt] * len(batch) if cfg.negative_prompt else None,
                generator=[torch.Generator("cpu").manual_seed(it["seed"]) for it in batch],
            ).images
            for it, image in zip(batch, images):
                buf = io.BytesIO()
                image.save(buf, format="png")
                meta = {"seed": it["seed"], **cfg.settings()}
                out.append({"__key__": it["key"], "png": buf.getvalue(), "txt": it["prompt"], "json": meta})
        return out


def _start_plan(out: Path, items: list[dict], config: GenerateConfig, extra: dict) -> list[list[dict]]:
    """Write ``plan.json`` and ``prompts.csv`` (or check an existing plan matches) and split items into shards."""
    import pandas as pd

    digest = hashlib.sha256(json.dumps([items, config.settings(), config.shard_size]).encode()).hexdigest()[:16]
    plan_path = out / PLAN_FILE
    if plan_path.is_file():
        if json.loads(plan_path.read_text(encoding="utf-8")).get("plan") != digest:
            raise ConfigError(f"{out} holds a different set (another plan); use a new --out or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"imgId": [it["key"] for it in items], "prompt": [it["prompt"] for it in items]})
        with atomic.atomic_path(out / "prompts.csv", ".csv") as tmp:
            frame.to_csv(tmp, index=False)
        atomic.write_text(plan_path, json.dumps({"plan": digest, "settings": config.settings(), **extra}, indent=2))
    return [items[s : s + config.shard_size] for s in range(0, len(items), config.shard_size)]


def generate_set(prompts: Sequence[str], out: str | Path, config: GenerateConfig, backend: str = "local",
                 ray_address: str | None = None, progress: bool = True, extra_manifest: dict | None = None) -> dict:
    """Generate one image per (prompt, seed) into shards under ``out``; finished shards are kept. Returns the manifest."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    resolve_model(config.model)
    out = Path(out)
    items = plan_items(prompts, config.seeds_per_prompt)
    shards = _start_plan(out, items, config, {"n_prompts": len(prompts)})
    todo = [i for i in range(len(shards)) if not (out / shard_name(SHARD_PREFIX, i)).is_file()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc="generate", unit="img", disable=not progress)
    bar.update(len(items) - sum(len(shards[i]) for i in todo))
    t0 = time.perf_counter()

    def store(i: int, samples: list[dict]) -> None:
        write_shard(out / shard_name(SHARD_PREFIX, i), samples)
        bar.update(len(samples))

    if todo:
        run = _run_ray if backend == "ray" else _run_local
        run(config, [(i, shards[i]) for i in todo], store, ray_address)
    bar.close()
    manifest = {
        "n_images": len(items), "n_prompts": len(prompts), "shards": len(shards), "shards_made": len(todo),
        "pattern": f"{SHARD_PREFIX}-{{{0:06d}..{len(shards) - 1:06d}}}.tar", "settings": config.settings(),
        "backend": backend, "wall_time_s": round(time.perf_counter() - t0, 3), **(extra_manifest or {}),
    }
    atomic.write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str))
    return manifest


def _run_local(config: GenerateConfig, jobs: list[tuple[int, list[dict]]], store: Callable, _address: Any) -> None:
    """Make the shards one after another in this process."""
    maker = ShardMaker(config)
    for i, items in jobs:
        store(i, maker.make(items))


def _run_ray(config: GenerateConfig, jobs: list[tuple[int, list[dict]]], store: Callable, address: str | None) -> None:
    """Make the shards on Ray actors (one per GPU, else one per CPU), each building the pipeline once."""
    from promptblend.raypool import ActorPool

    pool = ActorPool(ShardMaker, (config,), address)
    try:
        for i, samples in pool.map_ordered("make", [(items,) for _, items in jobs], [i for i, _ in jobs]):
            store(i, samples)
    finally:
        pool.close()
