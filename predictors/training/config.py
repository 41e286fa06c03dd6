"""Loop settings (:class:`TrainConfig`) and the training presets kept as JSON in ``predictors/configs/train``."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptblend.errors import ConfigError

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
AMP_MODES = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")
#: ``auto``: ``text-map`` when a ``bank`` is given, else ``random``.
HEAD_INITS = ("random", "text-map", "auto")
#: Share of the planned steps that an automatic linear-probe phase takes (``lp_steps`` None, text-map init).
AUTO_LP_SHARE = 0.1
#: Settings that may change between a run and its resumption (budget, cadence, hardware; the bank is
#: recorded by its text map's key instead of its path).
RUN_ONLY = ("epochs", "max_steps", "time_budget", "val_every", "save_every", "device", "num_workers", "progress", "bank")


@dataclass
class TrainConfig:
    """Settings of the loop itself (the architecture lives in the task's ``arch`` dict).

    ``shard_parts``: streams a shard set is dealt into (see :class:`~.data.BatchPlan`; use the
    number of processes, or a multiple of it, so each reads only its own shards).
    ``one_image_per_prompt``: an epoch reads one image of each prompt, a different one (seed) each epoch;
    None: on when every training prompt has the same number (> 1) of images, as ``experiments.generate
    --seeds-per-prompt`` makes (validation then keeps one fixed image per prompt; see :func:`~.data.data_split`).
    ``batch_size`` is the global batch of one optimiser step (split over ranks and ``grad_accum``
    micro-batches); ``warmup``, ``max_steps``, ``val_every`` and ``save_every`` count optimiser steps
    (``val_every`` None: once per epoch; ``save_every`` None: at each validation); ``time_budget`` is
    in seconds of this process's wall time (a checkpoint is written when it runs out).

    The levers of the top solutions: ``head_init`` ``text-map`` starts the head as the ridge map from
    CLIP text to MiniLM fitted on ``bank`` (:mod:`predictors.clip_text_map`); ``lp_steps`` is a
    linear-probe phase (head only, constant lr) before the end-to-end phase (None: 10% of the planned
    steps with a text-map head when fine-tuning, else none; counted in the step budget);
    ``image_size`` fine-tunes and serves an open_clip ViT at another resolution (position embeddings
    interpolated).
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
    one_image_per_prompt: bool | None = None
    head_init: str = "random"
    bank: str | None = None
    lp_steps: int | None = None
    image_size: int | None = None
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
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"head_init must be one of {', '.join(HEAD_INITS)} (got {self.head_init!r})")
        if self.head_init == "text-map" and not self.bank:
            raise ConfigError("head_init text-map needs a prompt bank with CLIP keys (--bank DIR, built by index.build --keys)")
        if self.lp_steps is not None and (self.lp_steps < 0 or not self.finetune and self.lp_steps):
            raise ConfigError(f"lp_steps must be >= 0, and > 0 only when fine-tuning the tower (got {self.lp_steps})")
        if self.image_size is not None and (self.image_size < 1 or not self.finetune):
            raise ConfigError(f"image_size needs fine-tuning (the tower's position embeddings are interpolated; got {self.image_size})")

    def resolve(self) -> TrainConfig:
        """``head_init`` ``auto`` made concrete (``text-map`` when a bank is given); returns self."""
        if self.head_init == "auto":
            self.head_init = "text-map" if self.bank else "random"
        return self

    def lp_steps_for(self, total: int) -> int:
        """Linear-probe steps of a run planned for ``total`` steps (see the class docstring)."""
        if self.lp_steps is not None:
            return self.lp_steps
        return max(1, round(AUTO_LP_SHARE * total)) if self.finetune and self.head_init == "text-map" else 0

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
    source = "the given config" if isinstance(config, dict) else f"'{config}'"
    for key in sorted(k for k in given if k in base and _json(given[k]) != _json(base[k])):
        log.info("%s=%s overrides %s (%s=%s)", key, _json(given[key]), source, key, _json(base[key]))
    settings = {**base, **given}
    clip = settings.pop("clip", None)
    if not clip or len(clip) != 2:
        raise ConfigError("training needs clip=(model_name, pretrained)")
    loop = TrainConfig(**{k: settings.pop(k) for k in list(settings) if k in LOOP_KEYS})
    return loop, settings, (str(clip[0]), clip[1])


def _json(value: Any) -> str:
    return json.dumps(value, default=str)  # tuples and lists alike (a clip pair), paths as text


def arch_of(preset: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str | None], bool]:
    """A preset's architecture settings, its CLIP and whether it fine-tunes the tower."""
    preset = dict(preset)
    clip = tuple(preset.pop("clip"))
    return {k: v for k, v in preset.items() if k not in LOOP_KEYS}, (clip[0], clip[1]), bool(preset.get("finetune"))
