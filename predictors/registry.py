"""Predictor registry: one JSON file per entry in ``predictors/configs/`` (name, class, params).

``list_predictors()``, ``get_predictor_config(name)`` (a copy), ``create_predictor(name, **overrides)``
and ``add_predictor_config(name, config)``, in the manner of open_clip's model configs.
``resolved_entry`` / ``build_predictor`` carry an entry as data to another process (a Ray actor).
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

from promptblend.errors import ConfigError

from .base import Predictor

_CONFIG_DIR = Path(__file__).parent / "configs"
_REGISTRY: dict[str, dict] = {}


def _load_builtin() -> None:
    for f in sorted(_CONFIG_DIR.glob("*.json")):
        cfg = json.loads(f.read_text(encoding="utf-8"))
        _REGISTRY[cfg.get("name", f.stem)] = cfg


def add_predictor_config(name: str, config: dict) -> None:
    """Register (or replace) an entry: ``{"class": "module:Class", "params": {...}}``; ``Class`` may also be
    a function returning a :class:`Predictor` (an application passing its own parts to a predictor)."""
    if "class" not in config:
        raise ConfigError(f"predictor config '{name}' needs a 'class' ('module:Class')")
    _REGISTRY[name] = {"name": name, "params": {}, **copy.deepcopy(config)}


def list_predictors() -> list[str]:
    """Registered predictor names, sorted."""
    return sorted(_REGISTRY)


def get_predictor_config(name: str) -> dict:
    """A copy of the entry ``name``; unknown names raise :class:`ConfigError`."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown predictor '{name}'; known: {', '.join(list_predictors())}")
    return copy.deepcopy(_REGISTRY[name])


def resolve_params(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The entry's params updated with ``overrides``; keys it does not have raise :class:`ConfigError`."""
    params = get_predictor_config(name).get("params", {})
    unknown = sorted(set(overrides or {}) - set(params))
    if unknown:
        raise ConfigError(
            f"predictor '{name}' has no config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(params))}"
        )
    params.update(overrides or {})
    return params


def resolved_entry(name: str, overrides: dict[str, Any] | None = None) -> dict:
    """The entry ``name`` with its params resolved (``overrides`` applied): plain data from which
    :func:`build_predictor` makes the same predictor in any process, one that never saw it registered."""
    return {**get_predictor_config(name), "name": name, "params": resolve_params(name, overrides)}


def build_predictor(entry: dict) -> Predictor:
    """Instantiate a resolved entry (see :func:`resolved_entry`); models load lazily."""
    module_name, _, cls_name = entry["class"].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    predictor = cls(**entry["params"])
    predictor.name = entry["name"]
    return predictor


def create_predictor(name: str, **overrides: Any) -> Predictor:
    """Instantiate the entry ``name`` with its params updated by ``overrides`` (models load lazily)."""
    return build_predictor(resolved_entry(name, overrides))


_load_builtin()
