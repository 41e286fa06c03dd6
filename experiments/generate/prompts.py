"""Which prompts a generated set gets: read (bank or files), exclude near-duplicates of other sets, sample,
and (``dedup_cos``) skip near-duplicates of prompts already chosen."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promptblend.errors import ConfigError, TruthError

SAMPLERS = ("random", "clusters")
#: Most k-means clusters ``--sample clusters`` fits (the set is spread round-robin over them).
MAX_CLUSTERS = 4096


@dataclass
class Candidates:
    """Prompt texts with their unit MiniLM values (row-aligned) and where they came from."""

    prompts: list[str]
    values: np.ndarray
    source: dict = field(default_factory=dict)


def read_candidates(sources: Sequence[str | os.PathLike]) -> Candidates:
    """A bank folder's prompts and values (no re-embedding), or prompt files normalised as ``index.build`` does."""
    from promptblend.bank import MANIFEST, load_bank

    paths = [Path(s) for s in sources]
    if len(paths) == 1 and paths[0].is_dir() and (paths[0] / MANIFEST).is_file():
        bank = load_bank(paths[0])
        return Candidates(list(bank.prompts), np.asarray(bank.values, np.float32),
                          {"bank": str(paths[0]), "build_hash": bank.manifest.get("build_hash")})
    from index.normalise import CleanStats, clean_unique
    from index.sources import iter_prompts
    from promptblend.text import encode

    stats = CleanStats()
    prompts = list(clean_unique(iter_prompts(paths), stats))
    if not prompts:
        raise ConfigError(f"no prompts in {', '.join(map(str, paths))}")
    values = np.asarray(encode(prompts, show_progress=len(prompts) > 512), np.float32)
    return Candidates(prompts, values, {"files": [str(p) for p in paths], "clean": stats.as_dict()})


def exclusion_prompts(source: str | os.PathLike) -> list[str]:
    """The prompts of an ``--exclude`` image set (any :func:`~promptblend.imagesets.open_image_set` source:
    a folder, the competition's ``images/`` + ``prompts.csv``, shards, Parquet) or file (prompts.csv or any
    prompt file)."""
    from promptblend.imagesets import is_image_set, open_image_set

    if is_image_set(source):
        image_set = open_image_set(source)
        prompts = list(image_set.prompts.values()) if image_set.prompts else []
    elif Path(source).is_file():
        from index.sources import iter_prompts

        prompts = [t for _, t in iter_prompts([Path(source)]) if t.strip()]
    else:
        raise ConfigError(f"--exclude {source}: not found")
    if not prompts:
        raise TruthError(f"--exclude {source} holds no prompts")
    return prompts


def exclude_near(cands: Candidates, excluded: np.ndarray, threshold: float) -> tuple[np.ndarray, dict]:
    """Rows of ``cands`` whose cosine to every ``excluded`` vector is below ``threshold``, and the stats."""
    import faiss

    index = faiss.IndexFlatIP(excluded.shape[1])
    index.add(np.ascontiguousarray(excluded, np.float32))
    best = np.empty(len(cands.prompts), np.float32)
    for start in range(0, len(best), 65536):
        sims, _ = index.search(np.ascontiguousarray(cands.values[start : start + 65536], np.float32), 1)
        best[start : start + 65536] = sims[:, 0]
    keep = np.flatnonzero(best < threshold)
    stats = {"threshold": threshold, "excluded_prompts": len(excluded), "candidates": len(best),
             "removed": int(len(best) - len(keep)),
             "max_cos_kept": float(best[keep].max()) if len(keep) else None}
    return keep, stats


def ranked_rows(values: np.ndarray, n: int, how: str = "random", seed: int = 0) -> np.ndarray:
    """Every row in the order a sample of ``n`` takes them: a seeded permutation, or round-robin over
    ``min(n, MAX_CLUSTERS)`` k-means clusters of ``values`` (covers the bank); a sample is a prefix."""
    if how not in SAMPLERS:
        raise ConfigError(f"--sample {how!r}: use one of {', '.join(SAMPLERS)}")
    rng = np.random.default_rng(seed)
    if how == "random" or n >= len(values):
        return rng.permutation(len(values))
    import faiss

    k = min(n, MAX_CLUSTERS, len(values))
    km = faiss.Kmeans(values.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(values, np.float32))
    _, labels = km.index.search(np.ascontiguousarray(values, np.float32), 1)
    labels = labels[:, 0]
    order = rng.permutation(len(values))
    # rank of each row inside its cluster (in random order), then take by (rank, cluster): round-robin
    members = {c: order[labels[order] == c] for c in np.unique(labels)}
    rank = np.empty(len(values), np.int64)
    for rows in members.values():
        rank[rows] = np.arange(len(rows))
    return np.lexsort((rng.permutation(len(values)), rank))


def sample_rows(values: np.ndarray, n: int, how: str = "random", seed: int = 0) -> np.ndarray:
    """``n`` rows (sorted): uniformly at random, or round-robin over k-means clusters of ``values``."""
    return np.sort(ranked_rows(values, n, how, seed)[:n])


def dedup_walk(values: np.ndarray, order: np.ndarray, n: int, threshold: float,
               block: int = 4096) -> tuple[np.ndarray, dict]:
    """The first ``n`` rows of ``order`` that are each below cosine ``threshold`` to every row kept before
    them (greedy, in ``order``): FAISS inner product against the kept rows, a block matrix within a block."""
    import faiss

    index = faiss.IndexFlatIP(values.shape[1])
    kept: list[int] = []
    seen = 0
    while len(kept) < n and seen < len(order):
        rows = order[seen : seen + min(block, max(64, 2 * (n - len(kept))))]
        seen += len(rows)
        vecs = np.ascontiguousarray(values[rows], np.float32)
        ok = np.ones(len(rows), bool)
        if index.ntotal:
            ok &= index.search(vecs, 1)[0][:, 0] < threshold
        sims = vecs @ vecs.T
        for i in range(len(rows)):  # greedy within the block: a kept row drops every later near-duplicate
            if ok[i]:
                ok[i + 1 :] &= sims[i, i + 1 :] < threshold
        new = rows[ok][: n - len(kept)]
        index.add(np.ascontiguousarray(values[new], np.float32))
        kept.extend(int(r) for r in new)
        if len(kept) == n:  # count only up to the row that filled the set
            seen -= len(rows) - (int(np.flatnonzero(ok)[len(new) - 1]) + 1)
    stats = {"threshold": threshold, "looked_at": seen, "kept": len(kept), "removed": seen - len(kept)}
    return np.asarray(kept, np.int64), stats


def choose_prompts(sources: Sequence[str | os.PathLike], n: int, sample: str = "random",
                   exclude: Sequence[str | os.PathLike] = (), exclude_cos: float = 0.8,
                   seed: int = 0, dedup_cos: float | None = None) -> tuple[list[str], dict]:
    """``n`` prompts from ``sources``, none within cosine ``exclude_cos`` of an ``exclude`` set's prompts and,
    with ``dedup_cos``, no two within ``dedup_cos`` of each other (near-duplicates skipped in sampling order)."""
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if dedup_cos is not None and not -1.0 < dedup_cos <= 1.0:
        raise ConfigError(f"--dedup-cos must be in (-1, 1], got {dedup_cos}")
    excluded = list(dict.fromkeys(p for src in exclude for p in exclusion_prompts(src)))  # each text once
    cands = read_candidates(sources)
    stats: dict = {"source": cands.source, "sample": sample, "seed": seed}
    rows = np.arange(len(cands.prompts))
    if excluded:
        from promptblend.text import encode

        rows, stats["exclude"] = exclude_near(cands, np.asarray(encode(excluded), np.float32), exclude_cos)
        stats["exclude"]["sets"] = [str(s) for s in exclude]
        if not len(rows):
            raise ConfigError(f"no prompt left after excluding those within cosine {exclude_cos} of {len(excluded)} "
                              f"prompts of {', '.join(map(str, exclude))}")
    left = " after exclusion" if excluded else ""
    if n > len(rows):
        raise ConfigError(f"--n {n} is more than the {len(rows)} prompts available{left}; pass --n {len(rows)} or fewer")
    if dedup_cos is None:
        picked = rows[sample_rows(cands.values[rows], n, sample, seed)]
    else:
        order = ranked_rows(cands.values[rows], n, sample, seed)
        kept, stats["dedup"] = dedup_walk(cands.values[rows], order, n, dedup_cos)
        if len(kept) < n:
            raise ConfigError(f"--n {n} is more than the {len(kept)} prompts left{left} once near-duplicates "
                              f"(cosine >= {dedup_cos}) are removed; pass --n {len(kept)} or fewer")
        picked = np.sort(rows[kept])
    return [cands.prompts[i] for i in picked], stats
