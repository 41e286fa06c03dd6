"""The training loop shared by the trainable predictors (clipcap, clip-regressor).

Both predictors sit on a frozen CLIP image encoder, so :func:`prepare_pairs` embeds the training
images once (cached on disk with the MiniLM targets of their prompts) and :func:`fit` trains a
:class:`TrainTask` on those tensors: AdamW, shuffled batches, a validation loss and the competition
score on a held-out split each epoch, a safetensors checkpoint each epoch (model, optimizer,
epoch/step, RNG; atomic) from which a killed run resumes, ``metrics.csv``/``metrics.json`` and a
``training_curves.png`` plot.

An output folder holds ``config.json`` (what the predictor needs to rebuild the model),
``checkpoint.safetensors`` (resume state), ``model.safetensors`` (weights, written each epoch),
``metrics.*`` and whatever the task saves beside them (a tokenizer).
"""

from __future__ import annotations

import abc
import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from promptblend import atomic
from promptblend.errors import (
    ConfigError,
    ImageSetError,
    ModelNotFoundError,
    TruthError,
)
from promptblend.images import ImageSet, load_image, open_image_set, read_prompts_csv
from promptblend.text import encode

from .base import Predictor

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FIELDS = ("epoch", "step", "train_loss", "val_loss", "val_score", "baseline_score", "seconds")


@dataclass
class TrainConfig:
    """Settings of the loop itself (the architecture lives in the task's ``arch`` dict)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    val_frac: float = 0.1
    seed: int = 0
    grad_clip: float = 1.0
    device: str | None = None
    num_workers: int = 2
    progress: bool = True

    def check(self) -> None:
        """Refuse values the loop cannot use."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if not 0.0 <= self.val_frac < 1.0:
            raise ConfigError(f"val_frac must be in [0, 1) (got {self.val_frac})")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0 (got {self.lr})")


@dataclass
class PairData:
    """Image-prompt pairs reduced to what training needs: CLIP features and MiniLM targets."""

    ids: list[str]
    prompts: list[str]
    features: np.ndarray  # float32 (N, clip_dim), unit rows
    targets: np.ndarray  # float32 (N, 384), unit rows
    clip: tuple[str, str | None]

    def __len__(self) -> int:
        return len(self.ids)


class TrainTask(abc.ABC):
    """What one trainable predictor plugs into :func:`fit`."""

    #: Written to ``config.json``; the predictor checks it.
    kind: str = ""

    def __init__(self, arch: dict[str, Any]) -> None:
        self.arch = dict(arch)

    @abc.abstractmethod
    def build(self, data: PairData, train_idx: np.ndarray, out: Path):
        """Create the model (a ``torch.nn.Module``); may save assets (a tokenizer) into ``out``."""

    @abc.abstractmethod
    def dataset(self, data: PairData, idx: np.ndarray):
        """A map-style dataset of the pairs ``idx`` (tensors only)."""

    def collate(self, items: list):
        """Batch dataset items; default: torch's."""
        from torch.utils.data import default_collate

        return default_collate(items)

    @abc.abstractmethod
    def loss(self, model, batch):
        """Mean loss of one batch (a scalar tensor)."""

    @abc.abstractmethod
    def predict(self, model, data: PairData, idx: np.ndarray) -> np.ndarray:
        """Predicted 384-d embeddings of the pairs ``idx`` (for the held-out score)."""

    def trainable_parameters(self, model) -> list:
        """Parameters AdamW updates; default: those with ``requires_grad``."""
        return [p for p in model.parameters() if p.requires_grad]


class Standardise(torch.nn.Module):
    """``x -> (x - mean) / scale`` with statistics of the training CLIP features.

    CLIP embeddings of one domain share a large common component; centring them (and scaling
    coordinates to ~1) lets a freshly initialised head see what tells images apart. The statistics
    are buffers, so they travel with the weights (identity until :meth:`fit`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, feats: np.ndarray) -> "Standardise":
        """Set the statistics from (N, dim) features; return self."""
        mean = feats.mean(0)
        self.mean.copy_(torch.from_numpy(mean))
        self.scale.fill_(max(float((feats - mean).std()), 1e-6))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


# ---------------------------------------------------------------- data


def resolve_pairs(
    images: ImageSet | str | Path | Sequence[str | Path],
    prompts: str | Path | dict[str, str] | Sequence[str] | None = None,
) -> tuple[ImageSet, list[str]]:
    """Turn images (a set, a folder or file paths) and prompts (a CSV, an id->prompt dict, a list
    aligned with the images, or None for the set's own ``prompts.csv``) into aligned pairs."""
    if isinstance(images, ImageSet):
        image_set = images
    elif isinstance(images, (str, Path)):
        image_set = open_image_set(images)
    else:
        paths = [Path(p) for p in images]
        missing = [str(p) for p in paths if not p.is_file()]
        if not paths or missing:
            raise ImageSetError(f"image files not found: {missing[:3]}" if missing else "no images given")
        image_set = ImageSet(paths[0].parent if paths else Path("."), [p.stem for p in paths], paths)
    if prompts is None:
        return image_set, image_set.prompt_list()
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts_csv(prompts)
    if isinstance(prompts, dict):
        image_set = dataclasses.replace(image_set, prompts=dict(prompts))
        return image_set, image_set.prompt_list()
    prompts = [str(p) for p in prompts]
    if len(prompts) != len(image_set):
        raise TruthError(f"{len(prompts)} prompts for {len(image_set)} images")
    if any(not p.strip() for p in prompts):
        raise TruthError("empty prompt in the prompt list")
    return image_set, prompts


class _ImageFiles:
    """Decode + CLIP-transform images in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i]))


def clip_key(clip: tuple[str, str | None]) -> str:
    """Identity of a CLIP model for caches: name, tag or weights file (with its size and mtime)."""
    name, pretrained = clip
    parts = [name, str(pretrained)]
    if pretrained and Path(pretrained).is_file():
        st = Path(pretrained).stat()
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def clip_image_features(
    image_set: ImageSet,
    clip: tuple[str, str | None],
    device: str | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    progress: bool = True,
) -> np.ndarray:
    """Unit CLIP image embeddings (N, D) of an image set, cached on disk per CLIP model and set."""
    import torch
    from tqdm.auto import tqdm

    from promptblend.cache import cache_dir
    from promptblend.clip import embed_images, load_clip

    key = hashlib.sha256(f"{clip_key(clip)}:{image_set.fingerprint(fast=True)}".encode()).hexdigest()[:24]
    path = cache_dir() / "clip-features" / f"{key}.npy"
    if path.is_file():
        feats = atomic.load_npy(path)
        if feats.shape[0] == len(image_set):
            return feats
    bundle = load_clip(clip[0], clip[1], device)
    loader = torch.utils.data.DataLoader(
        _ImageFiles(image_set.paths, bundle.preprocess), batch_size=batch_size, num_workers=num_workers
    )
    out = [embed_images(bundle, x) for x in tqdm(loader, desc="clip features", unit="batch", disable=not progress)]
    feats = np.concatenate(out).astype(np.float32)
    atomic.save_npy(path, feats)
    return feats


def prompt_targets(prompts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings (the scoring model) of prompts, cached on disk by their text."""
    from promptblend.cache import cache_dir

    key = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:24]
    path = cache_dir() / "minilm-targets" / f"{key}.npy"
    if path.is_file():
        return atomic.load_npy(path)
    targets = encode(list(prompts))
    atomic.save_npy(path, targets)
    return targets


def prepare_pairs(
    images: ImageSet | str | Path | Sequence[str | Path],
    prompts: str | Path | dict[str, str] | Sequence[str] | None,
    clip: tuple[str, str | None],
    device: str | None = None,
    num_workers: int = 2,
    progress: bool = True,
) -> PairData:
    """Resolve the pairs and embed them: CLIP image features and MiniLM prompt targets."""
    image_set, texts = resolve_pairs(images, prompts)
    feats = clip_image_features(image_set, clip, device, num_workers=num_workers, progress=progress)
    return PairData(list(image_set.ids), texts, feats, prompt_targets(texts), (clip[0], clip[1]))


def split_indices(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / held-out split of ``n`` pairs (at least one held out when ``val_frac`` > 0)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = 0 if val_frac <= 0 else max(1, int(round(n * val_frac)))
    if n - n_val < 1:
        raise ConfigError(f"{n} pairs leave nothing to train on with val_frac={val_frac}")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---------------------------------------------------------------- checkpoints


def _state_tensors(module, prefix: str = "") -> tuple[dict, dict]:
    """A module's state as contiguous CPU tensors with shared (tied) tensors stored once."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[prefix + name] = seen[key]
            continue
        if key is not None:
            seen[key] = prefix + name
        tensors[prefix + name] = t.detach().cpu().contiguous()
    return tensors, aliases


def _load_state(module, tensors: dict, aliases: dict, prefix: str = "") -> None:
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    state.update({k[len(prefix) :]: tensors[v] for k, v in aliases.items() if k.startswith(prefix)})
    module.load_state_dict(state)


def save_weights(path: str | Path, module) -> None:
    """Save a module's weights as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors, aliases = _state_tensors(module)
    with atomic.atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"aliases": json.dumps(aliases)})


def load_weights(module, path: str | Path) -> None:
    """Load weights saved by :func:`save_weights` (or the model part of a checkpoint)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"weights file not found: {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    prefix = "model." if "epoch" in meta else ""
    _load_state(module, tensors, json.loads(meta.get("aliases", "{}")), prefix)


def save_checkpoint(path: str | Path, model, optimizer, epoch: int, step: int) -> None:
    """Model, AdamW state, epoch/step and torch RNG in one safetensors file, written atomically."""
    import torch
    from safetensors.torch import save_file

    tensors, aliases = _state_tensors(model, "model.")
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "epoch": str(epoch),
        "step": str(step),
        "aliases": json.dumps(aliases),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    with atomic.atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: str | Path, model, optimizer) -> tuple[int, int]:
    """Restore what :func:`save_checkpoint` wrote; return ``(epoch, step)``."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    _load_state(model, tensors, json.loads(meta["aliases"]), "model.")
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in json.loads(meta["optim_scalars"]).items():
        state.setdefault(int(idx), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}  # JSON made tuples lists
        for g in json.loads(meta["param_groups"])
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(meta["epoch"]), int(meta["step"])


# ---------------------------------------------------------------- the loop


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return int(first.shape[0])


def _to_device(batch, device: str):
    if isinstance(batch, (list, tuple)):
        return type(batch)(t.to(device) for t in batch)
    return {k: v.to(device) for k, v in batch.items()}


def _mean_loss(task: TrainTask, model, dataset, batch_size: int, device: str) -> float:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=task.collate)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            n = _batch_len(batch)
            total += float(task.loss(model, _to_device(batch, device))) * n
            count += n
    return total / max(count, 1)


def _training_identity(config: dict) -> dict:
    """The parts of ``config.json`` a resumed run must share (all but the epoch count)."""
    ident = json.loads(json.dumps(config))
    ident["train"].pop("epochs", None)
    return ident


def read_metrics(out: str | Path) -> list[dict]:
    """The per-epoch rows of ``metrics.json`` in a training folder (empty if none)."""
    path = Path(out) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8"))["epochs"] if path.is_file() else []


def _write_metrics(out: Path, rows: list[dict]) -> None:
    atomic.write_text(out / "metrics.json", json.dumps({"epochs": rows}, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out / "metrics.csv", buf.getvalue())


def plot_metrics(out: str | Path) -> Path | None:
    """Write ``training_curves.png``: train/validation loss and held-out score vs the mean-prompt baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out)
    if not rows:
        return None
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    if any(r["val_loss"] is not None for r in rows):
        a.plot(ep, [r["val_loss"] for r in rows], "s-", label="held-out")
        b.plot(ep, [r["val_score"] for r in rows], "o-", label="held-out score")
        b.plot(ep, [r["baseline_score"] for r in rows], "--", label="mean-prompt baseline")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.set(xlabel="epoch", ylabel="mean cosine (competition score)", title="held-out score")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    path = Path(out) / "training_curves.png"
    with atomic.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def fit(task: TrainTask, data: PairData, out: str | Path, cfg: TrainConfig) -> Path:
    """Train ``task`` on ``data`` into ``out``, resuming from its checkpoint when there is one."""
    import torch
    from tqdm.auto import tqdm

    from promptblend.device import default_device
    from promptblend.metric import score

    cfg.check()
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    device = cfg.device or default_device()
    train_idx, val_idx = split_indices(len(data), cfg.val_frac, cfg.seed)
    train_settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("device", "num_workers", "progress")}
    config = {
        "kind": task.kind,
        "clip": list(data.clip),
        "arch": task.arch,
        "train": train_settings,
        "data": {"n_pairs": len(data), "n_train": len(train_idx), "n_val": len(val_idx)},
    }
    torch.manual_seed(cfg.seed)
    try:
        model = task.build(data, train_idx, out).to(device)
    except Exception:
        if created:  # a model that cannot be built leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    params = task.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, step, rows = 0, 0, []
    if (out / CHECKPOINT_FILE).is_file():
        old = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")) if (out / CONFIG_FILE).is_file() else {}
        if not old or _training_identity(old) != _training_identity(config):
            raise ConfigError(f"{out} holds a checkpoint of a different training; use another --out or remove it")
        start, step = load_checkpoint(out / CHECKPOINT_FILE, model, opt)
        rows = [r for r in read_metrics(out) if r["epoch"] <= start]
        log.info("resuming %s from epoch %d (step %d)", out, start, step)
    atomic.write_text(out / CONFIG_FILE, json.dumps(config, indent=2))
    train_ds = task.dataset(data, train_idx)
    val_ds = task.dataset(data, val_idx) if len(val_idx) else None
    baseline = None
    if len(val_idx):
        mean = data.targets[train_idx].mean(0, keepdims=True)
        baseline = score(np.repeat(mean, len(val_idx), 0), data.targets[val_idx])
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=task.collate
        )
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{task.kind} epoch {epoch}/{cfg.epochs}", unit="batch", disable=not cfg.progress)
        for batch in bar:
            loss = task.loss(model, _to_device(batch, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            n, value = _batch_len(batch), loss.item()
            total += value * n
            count += n
            bar.set_postfix(loss=f"{value:.4f}")
        model.eval()
        row = {"epoch": epoch, "step": step, "train_loss": total / count, "val_loss": None, "val_score": None}
        if val_ds is not None:
            row["val_loss"] = _mean_loss(task, model, val_ds, cfg.batch_size, device)
            with torch.no_grad():
                row["val_score"] = score(task.predict(model, data, val_idx), data.targets[val_idx])
        row.update(baseline_score=baseline, seconds=round(time.perf_counter() - t0, 3))
        rows.append(row)
        _write_metrics(out, rows)  # before the checkpoint: a kill in between only repeats this epoch
        save_weights(out / MODEL_FILE, model)
        save_checkpoint(out / CHECKPOINT_FILE, model, opt, epoch, step)
        log.info(
            "epoch %d/%d: train loss %.4f, held-out loss %s, score %s (mean-prompt baseline %s)",
            epoch, cfg.epochs, row["train_loss"], _fmt(row["val_loss"]), _fmt(row["val_score"]), _fmt(baseline),
        )
    plot_metrics(out)
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


# ---------------------------------------------------------------- presets, Python API and CLI


def split_settings(presets: dict[str, dict], config: str | Path | dict, overrides: dict[str, Any]) -> tuple[TrainConfig, dict, tuple]:
    """A preset name, JSON file or dict, updated by ``overrides`` -> (loop settings, arch, clip).

    A JSON file's settings are laid over the preset its ``preset`` key names (default: ``default``).
    ``None`` overrides of loop settings or ``clip`` mean "not given". Keys must be :class:`TrainConfig` fields, ``clip`` or keys of the preset's architecture;
    anything else raises :class:`ConfigError`.
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
    loop_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    known = loop_keys | {"clip"} | set().union(*(p.keys() for p in presets.values()))
    unknown = sorted(set(base) - known | set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    given = {k: v for k, v in overrides.items() if v is not None or k not in loop_keys | {"clip"}}
    settings = {**base, **given}
    clip = settings.pop("clip", None)
    if not clip or len(clip) != 2:
        raise ConfigError("training needs clip=(model_name, pretrained)")
    loop = TrainConfig(**{k: settings.pop(k) for k in list(settings) if k in loop_keys})
    return loop, settings, (str(clip[0]), clip[1])


def train(
    task_cls: type[TrainTask],
    presets: dict[str, dict],
    images: ImageSet | str | Path | Sequence[str | Path],
    prompts: str | Path | dict[str, str] | Sequence[str] | None,
    out: str | Path,
    config: str | Path | dict = "default",
    **overrides: Any,
) -> Path:
    """Embed the pairs with the frozen CLIP, then :func:`fit` ``task_cls`` into ``out``; return ``out``."""
    loop, arch, clip = split_settings(presets, config, overrides)
    loop.check()
    data = prepare_pairs(images, prompts, clip, loop.device, loop.num_workers, loop.progress)
    return fit(task_cls(arch), data, out, loop)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def train_cli(task_cls: type[TrainTask], presets: dict[str, dict], argv: list[str] | None, prog: str) -> int:
    """The trainers' shared command line (``python -m predictors.<name>.train``)."""
    p = argparse.ArgumentParser(prog=prog, description=f"Train {task_cls.kind} on image-prompt pairs.")
    p.add_argument("--images", required=True, help="folder of training images (id = file stem)")
    p.add_argument("--prompts", help="imgId,prompt CSV (default: prompts.csv beside the images)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, metrics, the trained model")
    p.add_argument("--config", default="default", help=f"preset ({', '.join(presets)}) or JSON file (default: default)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--val-frac", type=float, help="held-out fraction scored each epoch")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers for image decoding")
    p.add_argument("--clip-model", help="open_clip architecture of the frozen image encoder")
    p.add_argument("--clip-pretrained", help="its pretrained tag or weights file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="architecture setting (JSON value)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    overrides: dict[str, Any] = {
        "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "weight_decay": a.weight_decay,
        "val_frac": a.val_frac, "seed": a.seed, "device": a.device, "num_workers": a.num_workers,
    }
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
    out = train(task_cls, presets, a.images, a.prompts, a.out, a.config, **overrides)
    rows = read_metrics(out)
    if rows:
        r = rows[-1]
        print(
            f"{out}: epoch {r['epoch']}, train loss {r['train_loss']:.4f}, held-out loss {_fmt(r['val_loss'])}, "
            f"score {_fmt(r['val_score'])} (mean-prompt baseline {_fmt(r['baseline_score'])})"
        )
    return 0


# ---------------------------------------------------------------- loading a trained folder in a predictor


def load_training_config(checkpoint: str | Path, kind: str) -> dict:
    """``config.json`` of a trained folder of ``kind``; a missing folder or weights raise :class:`ModelNotFoundError`."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise ModelNotFoundError(f"{kind} checkpoint folder not found: {path}")
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise ModelNotFoundError(f"{path} is not a trained {kind} folder (needs {CONFIG_FILE} and {MODEL_FILE})")
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("kind") != kind:
        raise ConfigError(f"{path} holds a {config.get('kind')} model, not {kind}")
    return config


class TrainedClipPredictor(Predictor):
    """A frozen CLIP image encoder plus a head trained by :func:`fit` (or randomly initialised).

    ``checkpoint``: a trained folder; ``init``: a trainer preset to build with random weights when
    there is no checkpoint (the ``-tiny`` entries); ``clip_model`` / ``clip_pretrained``: override
    the CLIP recorded in the checkpoint (e.g. a moved weights file) or the preset's. The device is
    the runner's (``self.device``; None = CUDA when available).
    """

    kind: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict]] = {}
    trainer: ClassVar[str] = ""

    def __init__(
        self,
        checkpoint: str | None = None,
        init: str | None = None,
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        seed: int = 0,
        **params: Any,
    ) -> None:
        super().__init__(
            checkpoint=checkpoint, init=init, clip_model=clip_model, clip_pretrained=clip_pretrained, seed=seed, **params
        )
        if checkpoint:
            self.train_config = load_training_config(checkpoint, self.kind)
            arch, clip = self.train_config["arch"], tuple(self.train_config["clip"])
            if clip_model and clip_model != clip[0]:
                raise ConfigError(f"{checkpoint} was trained on CLIP {clip[0]}, not {clip_model}")
        elif init:
            if init not in self.presets:
                raise ConfigError(f"unknown init preset '{init}' for {self.kind}; known: {', '.join(self.presets)}")
            self.train_config = None
            preset = dict(self.presets[init])
            clip = tuple(preset.pop("clip"))
            loop_keys = {f.name for f in dataclasses.fields(TrainConfig)}
            arch = {k: v for k, v in preset.items() if k not in loop_keys}
        else:
            raise ConfigError(
                f"{self.kind} needs checkpoint=DIR (train one with python -m {self.trainer}) "
                f"or init=PRESET for random weights"
            )
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.arch = arch
        self.clip = (clip_model or clip[0], clip_pretrained or clip[1])
        weights = self.clip[1]
        if weights and ("/" in weights or weights.endswith((".safetensors", ".pt", ".bin", ".pth"))):
            if not Path(weights).is_file():
                raise ModelNotFoundError(f"CLIP weights file not found: {weights} (pass clip_pretrained=PATH)")
        self.seed = seed
        self.bundle = None

    def cache_inputs(self) -> dict[str, Any]:
        """Digest of the trained weights and the CLIP weights file (the config names them by path only)."""
        inputs: dict[str, Any] = {"clip": clip_key(self.clip)}
        if self.checkpoint is not None:
            h = hashlib.sha256()
            for name in (CONFIG_FILE, MODEL_FILE):
                with open(self.checkpoint / name, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            inputs["checkpoint"] = h.hexdigest()[:16]
        return inputs

    def build_head(self, clip_dim: int):
        """Create the (untrained) head for a CLIP of width ``clip_dim``."""
        raise NotImplementedError

    def setup(self) -> None:
        import torch

        from promptblend.clip import load_clip

        self.bundle = load_clip(self.clip[0], self.clip[1], self.device)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.head = self.build_head(self.bundle.embed_dim)
        if self.checkpoint is not None:
            load_weights(self.head, self.checkpoint / MODEL_FILE)
        self.head.to(self.bundle.device).eval()

    def preprocess(self, image):
        """The CLIP transform of one image (a tensor)."""
        if self.bundle is None:
            self.ensure_setup()
        return self.bundle.preprocess(image)

    def collate(self, items: list):
        """Stack image tensors."""
        import torch

        return torch.stack(items)

    def clip_features(self, pixels):
        """Unit CLIP embeddings of a batch, as a tensor on the model's device."""
        import torch

        from promptblend.clip import embed_images

        return torch.from_numpy(embed_images(self.bundle, pixels)).to(self.bundle.device)
