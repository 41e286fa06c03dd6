"""A run's cache key and the fields of the config it is keyed by: written and read here only.

The keyed config is the predictor's resolved params plus, under :data:`INPUTS`, the content digest of
each local file or folder a param names (:meth:`predictors.base.Predictor.cache_inputs`). Its exact
hash tells runs of the same config as given; its content hash (each such path replaced by its digest)
still matches when the model folder moved (home vs. a competition notebook).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Key of the digests of a config's local inputs inside a run's keyed config.
INPUTS = "_inputs"


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-able config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_key(predictor: str, config: dict, fingerprint: str) -> str:
    """Cache key = predictor name + config hash + image-set fingerprint; also the run's folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in predictor)
    return f"{safe}-{config_hash(config)}-{fingerprint[:12]}"


def keyed_config(params: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config a run is keyed by: ``params`` and, when any, the digests of its local ``inputs``."""
    return {**params, INPUTS: dict(inputs)} if inputs else dict(params)


def content_hash(config: dict) -> str:
    """Hash of a keyed config with each local path replaced by its content digest (location-free)."""
    inputs = config.get(INPUTS) or {}
    return config_hash({k: inputs.get(k, v) for k, v in config.items() if k != INPUTS})
