"""Weights and resume checkpoints: one atomic safetensors file each, JSON state in its metadata.

A checkpoint holds named modules (``model.``, ``ema.``), the optimiser's tensors, torch's RNG and a
JSON ``state`` (step, scheduler, grad scaler, data position, metrics cursor). Unreadable or foreign
files raise :class:`CheckpointError` and are never overwritten by the failed load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promptblend import atomic
from promptblend.errors import ModelNotFoundError, PromptblendError


class CheckpointError(PromptblendError):
    """A checkpoint or weights file is truncated, unreadable, or holds another architecture."""


class TrainingDivergedError(PromptblendError):
    """The training loss became NaN or infinite (the last good checkpoint is kept)."""


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


def _load_state(module, tensors: dict, aliases: dict, prefix: str, path: Path) -> None:
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    state.update({k[len(prefix) :]: tensors[v] for k, v in aliases.items() if k.startswith(prefix)})
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:2]
        raise CheckpointError(f"{path} holds another architecture: {' '.join(first)[:300]}") from e


def _read(path: str | Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; unreadable files raise :class:`CheckpointError`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except Exception as e:  # safetensors raises its own error types for truncated or foreign bytes
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({type(e).__name__}: {e})") from e


def save_weights(path: str | Path, module) -> None:
    """Save a module's weights as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors, aliases = _state_tensors(module)
    with atomic.atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"aliases": json.dumps(aliases)})


def load_weights(module, path: str | Path) -> None:
    """Load weights saved by :func:`save_weights` into ``module``."""
    tensors, meta = _read(path)
    _load_state(module, tensors, json.loads(meta.get("aliases", "{}")), "", Path(path))


def save_checkpoint(path: str | Path, modules: dict[str, Any], optimizer, state: dict[str, Any]) -> None:
    """Modules, optimiser state, torch RNG and the JSON ``state`` in one safetensors file, written atomically."""
    import torch
    from safetensors.torch import save_file

    tensors, aliases = {}, {}
    for name, module in modules.items():
        t, a = _state_tensors(module, f"{name}.")
        tensors.update(t)
        aliases.update(a)
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, values in opt["state"].items():
        for k, v in values.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "state": json.dumps(state),
        "aliases": json.dumps(aliases),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    with atomic.atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The JSON ``state`` of a checkpoint (step, epoch, ...) without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {})["state"])
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({type(e).__name__}: {e})") from e


def load_checkpoint(path: str | Path, modules: dict[str, Any], optimizer) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``modules`` and ``optimizer``; return its ``state``."""
    import torch

    path = Path(path)
    tensors, meta = _read(path)
    if "state" not in meta:
        raise CheckpointError(f"{path} is a weights file, not a resume checkpoint")
    aliases = json.loads(meta["aliases"])
    for name, module in modules.items():
        _load_state(module, tensors, aliases, f"{name}.", path)
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
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path} holds optimiser state of another architecture: {e}") from e
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return json.loads(meta["state"])
