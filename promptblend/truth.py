"""The truth: embeddings of a ``prompts.csv``, a dict or an image set's prompts (cached like any run), or a run folder of them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from promptblend.cache import cache_dir
from promptblend.errors import TruthError
from promptblend.imagesets import open_image_set, read_prompts_csv, source_kind
from promptblend.runs import Run, build_run, is_run, load_run
from promptblend.text import SCORING_MODEL, encode, resolve_backend


def truth_run(prompts: str | Path | dict[str, str] | Any, model: str | None = None,
              cache: str | Path | None = None, backend: str = "auto") -> Run:
    """Embed truth prompts with the scoring model, cached by content and encoder backend.

    ``prompts``: a ``prompts.csv``, an ``{id: prompt}`` dict, or an image set with prompts (a folder with
    ``prompts.csv``, or shards whose ``.txt`` members are the prompts). ``backend``: see
    :func:`promptblend.text.encode` (``auto``: the ONNX export on CPU, length-bucketed batches).
    """
    prompts = _truth_prompts(prompts)
    ids, texts = list(prompts), list(prompts.values())
    h = hashlib.sha256()
    for id_, text in prompts.items():
        h.update(f"{id_}\0{text}\0".encode())
    cache = Path(cache) if cache is not None else cache_dir() / "truth"
    backend = resolve_backend(backend, model)  # the backends agree to ~1e-7, not bit for bit: part of the key
    run = build_run(
        cache,
        "truth",
        {"model": model or SCORING_MODEL, "encoder": backend},
        ids,
        h.hexdigest()[:16],
        lambda a, b: (encode(texts[a:b], model=model, backend=backend), texts[a:b]),
        shard_size=4096,
        progress=len(ids) > 4096,
    )
    return run


def _truth_prompts(source: Any) -> dict[str, str]:
    """``{id: prompt}`` from a dict, a prompts.csv or an image set."""
    if isinstance(source, dict):
        return source
    if isinstance(source, (str, Path)) and Path(source).is_file() and source_kind(source) is None:
        return read_prompts_csv(source)
    if isinstance(source, (str, Path)) and not Path(source).exists() and source_kind(source) is None:
        raise TruthError(f"truth not found: {source} (give a prompts.csv with imgId,prompt, a run folder or an image set)")
    image_set = open_image_set(source)
    return dict(zip(image_set.ids, image_set.prompt_list()))


def load_truth(truth: Run | str | Path | Any) -> Run:
    """Truth embeddings from a :class:`Run`, a run folder, or anything :func:`truth_run` embeds (cached)."""
    if isinstance(truth, Run):
        return truth
    if isinstance(truth, (str, Path)) and Path(truth).is_dir() and is_run(truth):
        return load_run(truth)
    return truth_run(truth)
