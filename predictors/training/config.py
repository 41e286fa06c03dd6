"""Loop settings (:class:`TrainConfig`) and the training presets kept as JSON in ``predictors/configs/train``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptblend.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
AMP_MODES = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")
#: Settings that may change between a run and its resumption (budget, cadence, hardware).
RUN_ONLY = ("epochs", "max_steps", "time_budget", "val_every", "save_every", "device", "num_workers", "progress")


@dataclass
class TrainConfig:
    """Settings of the loop itself (the architecture lives in the task's ``arch`` dict).

    ``shard_parts``: streams a shard set is dealt into (see :class:`~.data.BatchPlan`; use the
    number of processes, or a multiple of it, so each reads only its own shards).
    ``batch_size`` is the global batch of one optimiser step (split over ranks and ``grad_accum``
    micro-batches); ``warmup``, ``max_steps``, ``val_every`` and ``save_every`` count optimiser steps
    (``val_every`` None: once per epoch; ``save_every`` None: at each validation); ``time_budget`` is
    in seconds of this process's wall time (a checkpoint is written when it runs out).
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 0.01
    schedule: str = "constant"
    warmup: int = 0
    val_frac: float = 0.1
    val_every: int | None = None
    save_every: int | None = None
    seed: int = 0
    grad_clip: float = 1.0
    ema: float = 0.0
    amp: str = "off"
    finetune: bool = False
    unfreeze_last: int | None = None
    llrd: float = 1.0
    grad_checkpointing: bool = False
    augment: bool = False
    shard_parts: int = 1
    time_budget: float | None = None
    device: str | None = None
    num_workers: int = 2
    progress: bool = True

    def check(self) -> None:
        """Refuse values the loop cannot use."""
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(
                f"epochs, batch_size and grad_accum must be >= 1 (got {self.epochs}, {self.batch_size}, {self.grad_accum})"
            )
        if not 0.0 <= self.val_frac < 1.0:
            raise ConfigError(f"val_frac must be in [0, 1) (got {self.val_frac})")
        if not self.lr > 0 or (self.head_lr is not None and not self.head_lr > 0):
            raise ConfigError(f"lr and head_lr must be > 0 (got {self.lr}, {self.head_lr})")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1) (got {self.ema})")
        if not 0.0 < self.llrd <= 1.0:
            raise ConfigError(f"llrd must be in (0, 1] (got {self.llrd})")
        if self.amp not in AMP_MODES or self.schedule not in SCHEDULES:
            raise ConfigError(f"amp must be one of {AMP_MODES} and schedule one of {SCHEDULES}")
        for name in ("max_steps", "val_every", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (got {value})")
        if self.unfreeze_last is not None and self.unfreeze_last < 0:
            raise ConfigError(f"unfreeze_last must be >= 0 (got {self.unfreeze_last})")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}


LOOP_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def load_presets(kind: str) -> dict[str, dict[str, Any]]:
    """The training presets of ``kind`` (``predictors/configs/train/KIND.json``): name -> settings."""
    path = PRESET_DIR / f"{kind}.json"
    if not path.is_file():
        raise ConfigError(f"no training presets for '{kind}' ({path})")
    return json.loads(path.read_text(encoding="utf-8"))


def split_settings(
    presets: dict[str, dict], config: str | Path | dict, overrides: dict[str, Any]
) -> tuple[TrainConfig, dict, tuple]:
    """A preset name, JSON file or dict, updated by ``overrides`` -> (loop settings, arch, clip).

    A JSON file's settings are laid over the preset its ``preset`` key names (default: ``default``).
    ``None`` overrides of loop settings or ``clip`` mean "not given". Keys must be :class:`TrainConfig`
    fields, ``clip`` or keys of a preset's architecture; anything else raises :class:`ConfigError`.
    """
    if isinstance(config, dict):
        base = dict(config)
    elif str(config) in presets:
        base = dict(presets[str(config)])
    elif Path(config).is_file():
        try:
            base = json.loads(Path(config).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config} is not valid JSON: {e}") from e
        parent = base.pop("preset", "default")
        if parent not in presets:
            raise ConfigError(f"{config}: unknown preset '{parent}'; known: {', '.join(presets)}")
        base = {**presets[parent], **base}
    else:
        raise ConfigError(f"unknown config '{config}': a preset ({', '.join(presets)}) or a JSON file")
    known = LOOP_KEYS | {"clip"} | set().union(*(p.keys() for p in presets.values()))
    unknown = sorted(set(base) - known | set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    given = {k: v for k, v in overrides.items() if v is not None or k not in LOOP_KEYS | {"clip"}}
    settings = {**base, **given}
    clip = settings.pop("clip", None)
    if not clip or len(clip) != 2:
        raise ConfigError("training needs clip=(model_name, pretrained)")
    loop = TrainConfig(**{k: settings.pop(k) for k in list(settings) if k in LOOP_KEYS})
    return loop, settings, (str(clip[0]), clip[1])


def arch_of(preset: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str | None], bool]:
    """A preset's architecture settings, its CLIP and whether it fine-tunes the tower."""
    preset = dict(preset)
    clip = tuple(preset.pop("clip"))
    return {k: v for k, v in preset.items() if k not in LOOP_KEYS}, (clip[0], clip[1]), bool(preset.get("finetune"))
