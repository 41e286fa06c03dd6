"""The one training loop: step-based, resumable at any saved step, data-parallel under torchrun.

Each optimiser step reads one global batch (:class:`~.data.BatchPlan`), split over ranks and
``grad_accum`` micro-batches whose losses are weighted so the gradient equals the full batch's;
AdamW over the task's parameter groups, warmup then constant/cosine lr, optional EMA weights (used
for validation and saved as the model), mixed precision and a grad scaler on CUDA. Every
``val_every`` steps rank 0 scores the validation rows next to the mean-prompt baseline; at
validations and every ``save_every`` steps it writes ``metrics.*`` and then one atomic checkpoint.
A NaN loss raises :class:`~.checkpoint.TrainingDivergedError` before anything is written.

An output folder holds ``config.json`` (what the predictor needs to rebuild the model),
``checkpoint.safetensors`` (resume state), ``model.safetensors`` (served weights: the EMA when on),
``metrics.*``, ``training_curves.png`` and whatever the task saves beside them (a tokenizer).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptblend import atomic
from promptblend.cache import load_entry
from promptblend.errors import ConfigError

from . import distributed
from .checkpoint import (
    CheckpointError,
    TrainingDivergedError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .data import (
    BatchPlan,
    Keyed,
    PairData,
    StepSampler,
    data_split,
    loader,
    prompt_groups,
)
from .metrics import plot_metrics, read_metrics, read_step_losses, write_metrics
from .optim import Ema, lr_factor, make_optimizer
from .task import TrainTask

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"


@dataclass
class _Run:
    """Everything one training run carries between steps."""

    task: TrainTask
    data: PairData
    cfg: TrainConfig
    out: Path
    dist: distributed.Dist
    plan: BatchPlan
    total: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    ema: Ema | None
    train_idx: np.ndarray
    val_idx: np.ndarray
    config: dict
    step: int = 0
    rows: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    ddp: Any = None
    baseline: float | None = None
    lp: int = 0  # linear-probe steps (head only) before the end-to-end phase
    since: tuple[float, int] = (0.0, 0)  # sum and count of the step losses since the last metrics row


def _keyed(dataset):
    return dataset if getattr(dataset, "keyed", False) else Keyed(dataset)


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return int(first.shape[0])


def to_device(batch, device: str):
    """Move a tuple/list/dict batch of tensors to ``device``."""
    if isinstance(batch, (list, tuple)):
        return type(batch)(t.to(device, non_blocking=True) for t in batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def amp_context(cfg: TrainConfig, device: str):
    """Autocast in ``cfg.amp`` precision on CUDA; nothing on CPU (mixed precision is CUDA-only here)."""
    if cfg.amp == "off" or not device.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def _build(task: TrainTask, data: PairData, out: Path, cfg: TrainConfig, dist: distributed.Dist) -> _Run:
    """Model, optimiser, schedule, scaler and EMA of a fresh run (nothing restored yet)."""
    out.mkdir(parents=True, exist_ok=True)  # rank 0 made it in fit (removed on a failure with nothing to resume)
    train_idx, val_idx, one_per_prompt = data_split(data, cfg.val_frac, cfg.seed, cfg.one_image_per_prompt)
    task.configure(cfg)
    config = {
        "kind": task.kind, "clip": list(data.clip), "arch": task.arch, "train": cfg.identity(),
        "data": {"n_pairs": len(data), "n_train": len(train_idx), "n_val": len(val_idx),
                 "one_image_per_prompt": one_per_prompt},
    }
    torch.manual_seed(cfg.seed)
    model = task.build(data, train_idx, out, cfg).to(dist.device)
    groups = data.groups
    prompts = prompt_groups([data.prompts[i] for i in train_idx]) if one_per_prompt else None
    plan = BatchPlan(
        len(train_idx), cfg.batch_size, cfg.seed, dist.world, dist.rank, cfg.grad_accum, groups, cfg.shard_parts,
        prompts,
    )
    total = plan.total_steps(cfg.epochs, cfg.max_steps)
    if task.init_info:
        config["head_init"] = task.init_info
    lp = _planned_lp(out, cfg, total)
    opt = make_optimizer(task.param_groups(model, cfg), cfg.lr, cfg.weight_decay)
    factor = functools.partial(lr_factor, total=total, warmup=cfg.warmup, schedule=cfg.schedule, lp=lp)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and dist.device.startswith("cuda"))
    ema = Ema(model, cfg.ema) if cfg.ema else None
    run = _Run(task, data, cfg, out, dist, plan, total, model, opt, sched, scaler, ema, train_idx, val_idx, config, lp=lp)
    if len(val_idx):
        from promptblend.metric import score

        mean = data.targets[train_idx].mean(0, keepdims=True)
        run.baseline = score(np.repeat(mean, len(val_idx), 0), data.targets[val_idx])
    return run


def _planned_lp(out: Path, cfg: TrainConfig, total: int) -> int:
    """Linear-probe steps: those a resumed run's checkpoint recorded, else :meth:`TrainConfig.lp_steps_for`."""
    lp = cfg.lp_steps_for(total)
    if (out / CHECKPOINT_FILE).is_file():
        with contextlib.suppress(CheckpointError):  # a damaged checkpoint is dealt with by _resume
            lp = int(read_checkpoint_state(out / CHECKPOINT_FILE).get("lp_steps", lp))
    return lp


def _set_phase(run: _Run) -> None:
    """Linear probe (step < ``lp``): only the task's head parameters train; after it every trainable
    parameter does. (Re)wraps the model for data parallelism, which tracks the parameters that train."""
    if run.lp:
        head = {id(p) for p in run.task.head_parameters(run.model)}
        for p in (p for g in run.opt.param_groups for p in g["params"] if id(p) not in head):
            p.requires_grad_(run.step >= run.lp)
    run.ddp = distributed.wrap(run.dist, run.model)


def _modules(run: _Run) -> dict[str, torch.nn.Module]:
    return {"model": run.model, **({"ema": run.ema.module} if run.ema else {})}


def _resume(run: _Run) -> None:
    """Restore the run's checkpoint when there is one (refusing one of a different training; a damaged one
    is removed with a warning and the training starts afresh)."""
    path = run.out / CHECKPOINT_FILE
    if load_entry(path, read_checkpoint_state, "checkpoint") is None:
        return
    old_path = run.out / CONFIG_FILE
    old = json.loads(old_path.read_text(encoding="utf-8")) if old_path.is_file() else {}
    if old != json.loads(json.dumps(run.config)):
        raise ConfigError(f"{run.out} holds a checkpoint of a different training; use another --out or remove it")
    state = load_checkpoint(path, _modules(run), run.opt)
    run.sched.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema:
        run.ema.updates = state["ema_updates"]
    run.step = int(state["step"])
    run.since = tuple(state.get("since", (0.0, 0)))
    run.rows = [r for r in read_metrics(run.out) if r["step"] <= run.step]
    run.losses = read_step_losses(run.out)[: run.step]
    log.info("resuming %s at step %d (epoch %.2f)", run.out, run.step, run.plan.epoch_of(run.step))


def _save(run: _Run) -> None:
    """Rank 0: metrics first, then the served weights and the checkpoint (a kill between only repeats steps)."""
    if run.dist.is_main:
        write_metrics(run.out, run.rows, run.losses)
        save_weights(run.out / MODEL_FILE, run.ema.module if run.ema else run.model)
        state = {
            "step": run.step, "epoch": run.plan.epoch_of(run.step), "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict(), "ema_updates": run.ema.updates if run.ema else 0,
            "data": {"n_train": run.plan.n, "batch_size": run.plan.batch_size, "seed": run.plan.seed},
            "since": list(run.since), "lp_steps": run.lp, "head_init": run.cfg.head_init, "image_size": run.cfg.image_size,
        }
        save_checkpoint(run.out / CHECKPOINT_FILE, _modules(run), run.opt, state)
    distributed.barrier(run.dist)


def _step(run: _Run, micro: list) -> float:
    """One optimiser step over this rank's micro-batches; return the global mean loss."""
    n_global = len(run.plan.global_keys(run.step))
    local = 0.0
    for i, batch in enumerate(micro):
        n = _batch_len(batch)
        last = i == len(micro) - 1
        sync = run.ddp.no_sync() if run.dist.active and not last else contextlib.nullcontext()
        with sync:
            with amp_context(run.cfg, run.dist.device):
                loss = run.task.loss(run.ddp, to_device(batch, run.dist.device))
            run.scaler.scale(loss * (n * run.dist.world / n_global)).backward()
        local += float(loss.detach()) * n
    value = distributed.all_sum(run.dist, local) / n_global
    if not math.isfinite(value):
        run.opt.zero_grad(set_to_none=True)
        raise TrainingDivergedError(
            f"training loss is {value} at step {run.step + 1}; {run.out / CHECKPOINT_FILE} keeps the last good state "
            "(lower --lr or check the data)"
        )
    if run.cfg.grad_clip:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_([p for g in run.opt.param_groups for p in g["params"]], run.cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    run.sched.step()
    if run.ema:
        run.ema.update(run.model)
    return value


def _validate(run: _Run, images_per_s: float, seconds: float) -> dict:
    """A metrics row (``images_per_s``: training images per second of step time, loading included); its
    training loss averages every step since the previous row, those before a resumption included.

    Rank 0 scores the validation rows with the served weights (EMA when on); every rank gets the row."""
    total, count = run.since
    row = {
        "step": run.step, "epoch": run.plan.epoch_of(run.step), "train_loss": total / count if count else None,
        "val_loss": None, "val_score": None, "baseline_score": run.baseline,
        "lr": max(g["lr"] for g in run.opt.param_groups), "images_per_s": round(images_per_s, 2),
        "seconds": round(seconds, 3),
    }
    if len(run.val_idx) and run.dist.is_main:
        model = run.ema.module if run.ema else run.model
        model.eval()
        with torch.no_grad(), amp_context(run.cfg, run.dist.device):
            row["val_loss"], row["val_score"] = run.task.evaluate(model, run.data, run.val_idx, run.cfg)
        run.model.train()
    distributed.barrier(run.dist)
    return row


def _loader(run: _Run):
    """This rank's micro-batches from the current step to the end, decoded in workers."""
    pin = run.dist.device.startswith("cuda")
    if run.data.features is None:  # the tower trains: pixels of any source through the one batch dataset
        stream = run.task.stream(run.data, run.train_idx, StepSampler(run.plan, run.step, run.total), run.cfg)
        return loader(stream, run.cfg.num_workers, pin)
    ds = _keyed(run.task.dataset(run.data, run.train_idx, run.cfg, train=True))
    return iter(
        torch.utils.data.DataLoader(
            ds, batch_sampler=StepSampler(run.plan, run.step, run.total), num_workers=run.cfg.num_workers,
            collate_fn=run.task.collate, generator=torch.Generator().manual_seed(run.cfg.seed),
            pin_memory=pin,
        )
    )


def _train(run: _Run) -> None:
    """Steps until the end or the time budget; validate and save on schedule."""
    from promptblend.progress import progress_bar

    cfg = run.cfg
    val_every = cfg.val_every or run.plan.steps_per_epoch
    save_every = cfg.save_every or val_every
    batches, t0, images, done, busy = _loader(run), time.perf_counter(), 0, 0, 0.0
    bar = progress_bar(total=run.total, initial=run.step, desc=f"{run.task.kind}", unit="step",
               disable=not (cfg.progress and run.dist.is_main))
    run.model.train()
    saved = True
    while run.step < run.total:
        elapsed = time.perf_counter() - t0
        per_step = elapsed / max(1, done)
        if cfg.time_budget and done and distributed.any_rank(run.dist, elapsed + per_step > cfg.time_budget):
            log.info("time budget of %ss reached at step %d", cfg.time_budget, run.step)
            break
        images += len(run.plan.global_keys(run.step))
        t_step = time.perf_counter()
        value = _step(run, [next(batches) for _ in range(cfg.grad_accum)])
        busy += time.perf_counter() - t_step
        run.step, done = run.step + 1, done + 1
        run.losses.append(value)
        run.since = (run.since[0] + value, run.since[1] + 1)
        if run.step == run.lp:  # the linear probe is over: the whole model trains, the EMA restarts its warmup
            _set_phase(run)
            if run.ema:
                run.ema.updates = 0
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", score=fmt(run.rows[-1]["val_score"] if run.rows else None))
        saved = False
        if run.step % val_every == 0 or run.step == run.total:
            run.rows.append(_validate(run, images / busy, time.perf_counter() - t0))
            run.since = (0.0, 0)
            _log_row(run, run.rows[-1])
        if run.step % save_every == 0 or run.step % val_every == 0 or run.step == run.total:
            _save(run)
            saved = True
    bar.close()
    if not saved:
        _save(run)


def _log_row(run: _Run, row: dict) -> None:
    if run.dist.is_main:
        log.info(
            "step %d/%d (epoch %.2f): train loss %s, validation loss %s, score %s (mean-prompt baseline %s)",
            row["step"], run.total, row["epoch"], fmt(row["train_loss"]), fmt(row["val_loss"]),
            fmt(row["val_score"]), fmt(row["baseline_score"]),
        )


def fmt(x: float | None) -> str:
    """A score or loss to 4 decimals, ``-`` when missing."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _resumable(out: Path) -> bool:
    return (out / CHECKPOINT_FILE).is_file()


def fit(task: TrainTask, data: PairData, out: str | Path, cfg: TrainConfig) -> Path:
    """Train ``task`` on ``data`` into ``out``, resuming from its checkpoint when there is one."""
    cfg.resolve().check()
    if cfg.finetune and not task.can_finetune:
        raise ConfigError(f"{task.kind} cannot fine-tune the CLIP tower (finetune=true)")
    out = Path(out)
    dist = distributed.setup(cfg.device)
    # a failed training leaves its folder only when a checkpoint can resume it; the error says which
    folder = atomic.output_folder(out, _resumable) if dist.is_main else contextlib.nullcontext()
    try:
        with folder:
            run = _build(task, data, out, cfg, dist)
            _resume(run)
            if dist.is_main:
                atomic.write_text(out / CONFIG_FILE, json.dumps(run.config, indent=2))
            _set_phase(run)
            _train(run)
            if dist.is_main:
                plot_metrics(out)
    finally:
        distributed.teardown(dist)
    return out
