"""Truth embeddings of a ``prompts.csv``, cached like any run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from promptblend.embed import SCORING_MODEL, encode
from promptblend.images import read_prompts_csv
from promptblend.runs import Run, build_run, cache_dir


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
