"""The trainers' Python API (:func:`train`) and their shared command line (:func:`train_cli`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from promptblend.errors import ConfigError

from .config import split_settings
from .data import Images, Prompts, prepare_pairs
from .loop import fit, fmt
from .metrics import read_metrics
from .task import TrainTask


def train(
    task_cls: type[TrainTask],
    presets: dict[str, dict],
    images: Images,
    prompts: Prompts,
    out: str | Path,
    config: str | Path | dict = "default",
    val_images: Images | None = None,
    **overrides: Any,
) -> Path:
    """Embed the pairs (CLIP features unless fine-tuning; MiniLM targets, cached), then :func:`fit`
    ``task_cls`` into ``out``; ``val_images``: a separate validation set with its own prompts."""
    loop, arch, clip = split_settings(presets, config, overrides)
    loop.check()
    data = prepare_pairs(
        images, prompts, clip, loop.device, loop.num_workers, loop.progress, features=not loop.finetune,
        val_images=val_images,
    )
    return fit(task_cls(arch), data, out, loop)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser(kind: str, presets: dict[str, dict], prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=f"Train {kind} on image-prompt pairs (torchrun for several processes).")
    p.add_argument("--images", required=True, help="training image set (folder; id = file stem)")
    p.add_argument("--prompts", help="imgId,prompt CSV (default: prompts.csv beside the images)")
    p.add_argument("--val", help="validation image set with its prompts.csv (default: --val-frac of --images)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, metrics, the trained model")
    p.add_argument("--config", default="default", help=f"preset ({', '.join(presets)}) or JSON file (default: default)")
    p.add_argument("--clip-model", help="open_clip architecture of the image encoder")
    p.add_argument("--clip-pretrained", help="its pretrained tag or weights file")
    p.add_argument("--finetune", action="store_const", const=True, help="train the CLIP vision tower end to end")
    p.add_argument("--unfreeze-last", type=int, help="fine-tune only the last N transformer blocks (default: all)")
    p.add_argument("--llrd", type=float, help="layer-wise lr decay per block, e.g. 0.8 (1 = none)")
    p.add_argument("--lr", type=float, help="base lr (the tower's top block when fine-tuning)")
    p.add_argument("--head-lr", type=float, help="lr of the regression head (default: --lr)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, help="AdamW weight decay")
    p.add_argument("--warmup", type=int, help="linear warmup steps (then the preset's schedule; cosine for fine-tuning)")
    p.add_argument("--schedule", choices=("constant", "cosine"))
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int)
    group.add_argument("--max-steps", type=int, help="optimiser steps (instead of --epochs)")
    p.add_argument("--time-budget", type=float, help="stop (with a checkpoint) after this many seconds")
    p.add_argument("--batch-size", type=int, help="global batch per optimiser step (over ranks and --grad-accum)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step")
    p.add_argument("--ema", type=float, help="EMA decay of the weights used for validation and prediction (e.g. 0.999)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), help="mixed precision on CUDA (always off on CPU)")
    p.add_argument("--grad-checkpointing", action="store_const", const=True, help="trade compute for activation memory")
    p.add_argument("--augment", action="store_const", const=True, help="random resized crops and flips (seeded per sample)")
    p.add_argument("--shard-parts", type=int, help="deal training shards into N streams (use the process count)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: once per epoch)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (default: at each validation)")
    p.add_argument("--val-frac", type=float, help="held-out fraction when there is no --val set")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers for image decoding")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="architecture setting (JSON value)")
    p.add_argument("--no-progress", action="store_true")
    return p


LOOP_FLAGS = (
    "finetune", "unfreeze_last", "llrd", "lr", "head_lr", "weight_decay", "warmup", "schedule", "epochs", "max_steps",
    "time_budget", "batch_size", "grad_accum", "ema", "amp", "grad_checkpointing", "augment", "shard_parts", "val_every",
    "save_every", "val_frac", "seed", "device", "num_workers",
)


def train_cli(task_cls: type[TrainTask], presets: dict[str, dict], argv: list[str] | None, prog: str) -> int:
    """The trainers' shared command line (``python -m predictors.<name>.train``)."""
    a = _parser(task_cls.kind, presets, prog).parse_args(argv)
    overrides: dict[str, Any] = {k: getattr(a, k) for k in LOOP_FLAGS}
    if a.no_progress:
        overrides["progress"] = False
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants KEY=VALUE, got '{item}'")
        overrides[key] = _parse_value(value)
    if a.clip_model or a.clip_pretrained:
        base_clip = split_settings(presets, a.config, {})[2]
        overrides["clip"] = (a.clip_model or base_clip[0], a.clip_pretrained or base_clip[1])
    out = train(task_cls, presets, a.images, a.prompts, a.out, a.config, val_images=a.val, **overrides)
    rows = read_metrics(out)
    if rows and os.environ.get("RANK", "0") == "0":
        r = rows[-1]
        print(
            f"{out}: step {r['step']} (epoch {r['epoch']}), train loss {fmt(r['train_loss'])}, "
            f"validation loss {fmt(r['val_loss'])}, score {fmt(r['val_score'])} "
            f"(mean-prompt baseline {fmt(r['baseline_score'])})"
        )
    return 0
