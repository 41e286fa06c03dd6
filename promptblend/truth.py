"""The truth: embeddings of a ``prompts.csv`` (cached like any run) or a run folder of them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from promptblend.cache import cache_dir
from promptblend.errors import TruthError
from promptblend.images import read_prompts_csv
from promptblend.runs import Run, build_run, is_run, load_run
from promptblend.text import SCORING_MODEL, encode


def truth_run(prompts_csv: str | Path, model: str | None = None, cache: str | Path | None = None) -> Run:
    """Embed the prompts of ``prompts_csv`` with the scoring model (cached by file content)."""
    prompts = read_prompts_csv(prompts_csv)
    ids, texts = list(prompts), list(prompts.values())
    fingerprint = hashlib.sha256(Path(prompts_csv).read_bytes()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else cache_dir() / "truth"
    run = build_run(
        cache,
        "truth",
        {"model": model or SCORING_MODEL},
        ids,
        fingerprint,
        lambda a, b: (encode(texts[a:b], model=model), texts[a:b]),
        shard_size=4096,
        progress=len(ids) > 4096,
    )
    return run


def load_truth(truth: Run | str | Path) -> Run:
    """Truth embeddings from a :class:`Run`, a run folder, or a ``prompts.csv`` (embedded, cached)."""
    if isinstance(truth, Run):
        return truth
    path = Path(truth)
    if path.is_dir() and is_run(path):
        return load_run(path)
    if not path.is_file():
        raise TruthError(f"truth not found: {path} (give a prompts.csv with imgId,prompt or a run folder)")
    return truth_run(path)
