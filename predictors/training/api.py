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
    loop.resolve().check()
    data = prepare_pairs(
        images, prompts, clip, loop.device, loop.num_workers, loop.progress, features=not loop.finetune,
        val_images=val_images,
    )
    return fit(task_cls(arch), data, out, loop)


def default_pretrained(model: str) -> str | None:
    """The pretrained tag a model gets when none is named: ``openai`` when open_clip has it, else its first
    tag, else None (random init: the tiny and custom architectures have no tags)."""
    import open_clip

    from promptblend.clip import register_clip_configs

    register_clip_configs()
    tags = open_clip.list_pretrained_tags_by_model(model)
    return "openai" if "openai" in tags else (tags[0] if tags else None)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser(kind: str, presets: dict[str, dict], prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=f"Train {kind} on image-prompt pairs (torchrun for several processes).")
    p.add_argument("--images", required=True, metavar="SET",
                   help="training image set: a folder (id = file stem, prompts.csv beside), WebDataset shards or Parquet")
    p.add_argument("--prompts", metavar="CSV", help="imgId,prompt CSV (default: the set's own prompts)")
    p.add_argument("--val", metavar="SET", help="validation image set with its prompts (default: --val-frac of --images)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: checkpoints, metrics, the trained model")
    p.add_argument("--config", metavar="PRESET|JSON",
                   help=f"preset ({', '.join(presets)}) or JSON file (default: finetune with --finetune, else default); "
                        "a flag that contradicts it wins (named in the log)")
    p.add_argument("--clip-model", metavar="ARCH", help="open_clip architecture of the image encoder (e.g. ViT-L-14, pb-tiny-clip)")
    p.add_argument("--clip-pretrained", metavar="TAG|FILE|none",
                   help="its pretrained tag or weights file; none = random init (default: the preset's for its "
                        "model, else openai when open_clip has it, else the model's first tag, else none)")
    p.add_argument("--finetune", action="store_const", const=True,
                   help="train the CLIP vision tower end to end (alone: the fine-tune preset)")
    p.add_argument("--unfreeze-last", type=int, metavar="N", help="fine-tune only the last N transformer blocks (default: all)")
    p.add_argument("--llrd", type=float, metavar="X", help="layer-wise lr decay per block, e.g. 0.8 (1 = none)")
    p.add_argument("--lr", type=float, metavar="LR", help="base lr (the tower's top block when fine-tuning)")
    p.add_argument("--head-lr", type=float, metavar="LR", help="lr of the regression head (default: --lr)")
    p.add_argument("--head-init", choices=("random", "text-map", "auto"),
                   help="head start: random, or the ridge map from CLIP text to MiniLM fitted on --bank; "
                        "auto = text-map when --bank is given (the fine-tune presets)")
    p.add_argument("--bank", metavar="DIR", help="prompt bank (index.build --keys with this CLIP) for --head-init text-map")
    p.add_argument("--lp-steps", type=int, metavar="N",
                   help="linear-probe steps (head only) before the end-to-end phase, within the step budget "
                        "(default: 10%% of the steps with a text-map head when fine-tuning, else 0)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="fine-tune and serve an open_clip ViT at PX (a multiple of its patch size; "
                        "position embeddings interpolated)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, metavar="X", help="AdamW weight decay")
    p.add_argument("--warmup", type=int, metavar="STEPS",
                   help="linear warmup steps (then the preset's schedule; cosine for fine-tuning)")
    p.add_argument("--schedule", choices=("constant", "cosine"), help="lr schedule after the warmup")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int, metavar="N", help="passes over the training pairs")
    group.add_argument("--max-steps", type=int, metavar="N", help="optimiser steps (instead of --epochs)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop (with a checkpoint) after this many seconds")
    p.add_argument("--batch-size", type=int, metavar="N", help="global batch per optimiser step (over ranks and --grad-accum)")
    p.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimiser step")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="EMA decay of the weights used for validation and prediction (e.g. 0.999; 0 = off)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), help="mixed precision on CUDA (always off on CPU)")
    p.add_argument("--grad-checkpointing", action="store_const", const=True, help="trade compute for activation memory")
    p.add_argument("--augment", action="store_const", const=True, help="random resized crops and flips (seeded per sample)")
    p.add_argument("--shard-parts", type=int, metavar="N", help="deal training shards into N streams (use the process count)")
    p.add_argument("--one-image-per-prompt", action=argparse.BooleanOptionalAction, default=None,
                   help="each epoch reads one image (seed) per prompt, another each epoch; default: on when every "
                        "prompt has the same number (> 1) of images")
    p.add_argument("--val-every", type=int, metavar="STEPS", help="validate every N steps (default: once per epoch)")
    p.add_argument("--save-every", type=int, metavar="STEPS", help="checkpoint every N steps (default: at each validation)")
    p.add_argument("--val-frac", type=float, metavar="F", help="held-out fraction when there is no --val set")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the split, the batch order and the initialisation")
    p.add_argument("--device", metavar="DEV", help="cuda / cuda:N / cpu (default: cuda when available)")
    p.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers for image decoding")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="architecture setting (JSON value)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


LOOP_FLAGS = (
    "finetune", "unfreeze_last", "llrd", "lr", "head_lr", "head_init", "bank", "lp_steps", "image_size", "weight_decay",
    "warmup", "schedule", "epochs", "max_steps",
    "time_budget", "batch_size", "grad_accum", "ema", "amp", "grad_checkpointing", "augment", "shard_parts", "one_image_per_prompt", "val_every",
    "save_every", "val_frac", "seed", "device", "num_workers",
)


def cli_settings(presets: dict[str, dict], a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(config, overrides) of parsed trainer flags: ``--finetune`` alone selects the ``finetune`` preset;
    a ``--clip-model`` without ``--clip-pretrained`` gets the preset's tag for that model, else
    :func:`default_pretrained`; ``none`` is random initialisation."""
    overrides: dict[str, Any] = {k: getattr(a, k) for k in LOOP_FLAGS}
    if a.no_progress:
        overrides["progress"] = False
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants KEY=VALUE, got '{item}'")
        overrides[key] = _parse_value(value)
    config = a.config or ("finetune" if a.finetune and "finetune" in presets else "default")
    if a.clip_model or a.clip_pretrained:
        base_clip = split_settings(presets, config, {})[2]
        model = a.clip_model or base_clip[0]
        pretrained = a.clip_pretrained or (base_clip[1] if model == base_clip[0] else default_pretrained(model))
        overrides["clip"] = (model, None if str(pretrained).lower() == "none" else pretrained)
    return config, overrides


def train_cli(task_cls: type[TrainTask], presets: dict[str, dict], argv: list[str] | None, prog: str) -> int:
    """The trainers' shared command line (``python -m predictors.<name>.train``)."""
    a = _parser(task_cls.kind, presets, prog).parse_args(argv)
    config, overrides = cli_settings(presets, a)
    out = train(task_cls, presets, a.images, a.prompts, a.out, config, val_images=a.val, **overrides)
    rows = read_metrics(out)
    if rows and os.environ.get("RANK", "0") == "0":
        r = rows[-1]
        print(
            f"{out}: step {r['step']} (epoch {r['epoch']}), train loss {fmt(r['train_loss'])}, "
            f"validation loss {fmt(r['val_loss'])}, score {fmt(r['val_score'])} "
            f"(mean-prompt baseline {fmt(r['baseline_score'])})"
        )
    return 0
