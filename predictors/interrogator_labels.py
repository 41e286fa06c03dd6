"""CLIP Interrogator label banks: where the phrases come from, their CLIP text embeddings cached on
disk, chunked top-k.

A :class:`LabelSource` gives each bank's phrases; the default, :class:`PackageLabels`, builds them as
the ``clip-interrogator`` package does from its data files: flavors, mediums, movements as listed;
artists as "by X" and "inspired by X"; trendings from a list of sites. Text embeddings are computed
once per CLIP model and stored (float16, atomically) under ``promptblend.cache.cache_dir()/clip-labels/<model key>/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from promptblend import atomic
from promptblend.clip import ClipBundle, autocast, embed_texts
from promptblend.errors import ConfigError

log = logging.getLogger(__name__)

BANKS = ("artists", "flavors", "mediums", "movements", "trendings")
SITES = (
    "Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram", "pexels",
    "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr", "unsplash", "zbrush central",
)


def data_dir() -> Path:
    """The ``clip_interrogator/data`` folder of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("clip_interrogator")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the clip-interrogator package (label banks) is not installed: pip install clip-interrogator")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_list(name: str) -> list[str]:
    path = data_dir() / f"{name}.txt"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [s for s in (line.strip() for line in lines) if s]


def load_bank(name: str, limit: int | None = None) -> list[str]:
    """The phrases of bank ``name`` (first ``limit`` source lines when given)."""
    if name == "trendings":
        sites = list(SITES[:limit])
        return sites + [f"trending on {s}" for s in sites] + [f"featured on {s}" for s in sites] + [
            f"{s} contest winner" for s in sites
        ]
    if name not in BANKS:
        raise ConfigError(f"unknown label bank '{name}'; known: {', '.join(BANKS)}")
    items = _read_list(name)[:limit]
    if name == "artists":
        return [f"by {a}" for a in items] + [f"inspired by {a}" for a in items]
    return items


class LabelSource(Protocol):
    """Where an interrogator's phrase banks come from (the package's data files, an application's own lists)."""

    def phrases(self, bank: str) -> list[str]:
        """The phrases of ``bank`` (one of :data:`BANKS`, or a name the source's user asks for)."""
        ...

    def cache_inputs(self) -> dict[str, Any]:
        """Content identity of the phrases, for run cache keys."""
        ...


class PackageLabels:
    """The ``clip-interrogator`` package's banks (first ``limit`` source lines of each when given)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def phrases(self, bank: str) -> list[str]:
        """:func:`load_bank` of ``bank``."""
        return load_bank(bank, self.limit)

    def cache_inputs(self) -> dict[str, Any]:
        """Digest of the package's data folder (a new package release with other lists is a new run)."""
        from promptblend.digest import folder_digest

        return {"package_labels": folder_digest(data_dir())[:16]}


def label_embeddings(
    bundle: ClipBundle, labels: list[str], bank: str, cache: str | Path | None = None, batch_size: int = 256
) -> np.ndarray:
    """CLIP text embeddings (float16 unit rows) of ``labels``, from the disk cache or computed and stored."""
    from promptblend.cache import cache_dir, load_entry

    digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:12]
    path = Path(cache or cache_dir() / "clip-labels") / bundle.identity / f"{bank}-{len(labels)}-{digest}.npy"

    def load(p: Path) -> np.ndarray:
        emb = atomic.load_npy(p)
        if emb.ndim != 2 or emb.shape[0] != len(labels):
            raise ValueError(f"{emb.shape[0] if emb.ndim else 0} rows for {len(labels)} labels")
        return emb

    emb = load_entry(path, load, "label embeddings")
    if emb is not None:
        return emb
    log.info("embedding %d '%s' labels with %s (cached in %s)", len(labels), bank, bundle.name, path.parent)
    emb = embed_short_texts(bundle, labels, batch_size, progress=len(labels) > 4 * batch_size).astype(np.float16)
    atomic.save_npy(path, emb)
    return emb


def embed_short_texts(bundle: ClipBundle, texts: list[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """:func:`~promptblend.clip.embed_texts` computing only up to each batch's longest text.

    CLIP's causal text tower pooled at the end token gives the same result without the padding
    (for prompts of ~20 tokens, a quarter of the work). Models other than open_clip's plain ``CLIP``
    with argmax pooling take the full-context path.
    """
    from promptblend.progress import progress_bar

    if not short_context_ok(bundle):
        return embed_texts(bundle, texts, batch_size, progress)
    starts = progress_bar(range(0, len(texts), batch_size), disable=not progress, desc="clip text", unit="batch")
    chunks = [embed_tokens(bundle, bundle.tokenizer(list(texts[s : s + batch_size]))) for s in starts]
    return np.concatenate(chunks) if chunks else np.zeros((0, bundle.embed_dim), np.float32)


def short_context_ok(bundle: ClipBundle) -> bool:
    """Whether :func:`embed_tokens` applies (open_clip ``CLIP`` pooled at the end token)."""
    return type(bundle.model).__name__ == "CLIP" and getattr(bundle.model, "text_pool_type", None) == "argmax"


def embed_tokens(bundle: ClipBundle, tokens: Any) -> np.ndarray:
    """Unit CLIP text embeddings of token ids (N, L), zero-padded; columns past the longest row are cut."""
    import torch

    model = bundle.model
    n = max(1, int((tokens != 0).sum(1).max()))
    tokens = tokens[:, :n].to(bundle.device)
    with torch.inference_mode(), autocast(bundle.device):
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
        x = x[torch.arange(len(tokens), device=x.device), tokens.argmax(dim=-1)]
        proj = model.text_projection
        x = proj(x) if isinstance(proj, torch.nn.Module) else x @ proj
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy()


@dataclass
class LabelBanks:
    """All banks' phrases and embeddings in one matrix; ``spans[bank] = (start, stop)`` rows."""

    labels: list[str]
    embeds: np.ndarray
    spans: dict[str, tuple[int, int]]

    @classmethod
    def build(
        cls, bundle: ClipBundle, source: LabelSource, cache: str | Path | None = None, banks: Sequence[str] = BANKS
    ) -> LabelBanks:
        """Load the phrases of ``banks`` from ``source`` and their cached embeddings for ``bundle``."""
        labels: list[str] = []
        embeds, spans = [], {}
        for bank in banks:
            phrases = source.phrases(bank)
            spans[bank] = (len(labels), len(labels) + len(phrases))
            labels.extend(phrases)
            embeds.append(label_embeddings(bundle, phrases, bank, cache))
        return cls(labels, np.concatenate(embeds), spans)

    def top(self, features: Any, k: int, bank: str | None = None, chunk_size: int = 2048) -> list[list[str]]:
        """The ``k`` phrases (of ``bank``, or of all banks) closest to each row of ``features`` (B, D)."""
        start, stop = self.spans[bank] if bank else (0, len(self.labels))
        idx = top_k(features, self.embeds[start:stop], k, chunk_size)
        return [[self.labels[start + int(i)] for i in row] for row in idx]


def top_k(features: Any, embeds: np.ndarray, k: int, chunk_size: int = 2048) -> np.ndarray:
    """Exact top-``k`` row indices of ``embeds`` by dot product with each feature row, ranked in chunks."""
    import torch

    k = min(k, len(embeds))
    best_s = best_i = None
    for start in range(0, len(embeds), chunk_size):
        chunk = torch.from_numpy(np.asarray(embeds[start : start + chunk_size], dtype=np.float32)).to(features.device)
        s = features.float() @ chunk.T
        i = torch.arange(start, start + len(chunk), device=features.device).expand_as(s)
        if best_s is not None:
            s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
        best_s, pos = s.topk(min(k, s.shape[1]), dim=1)
        best_i = i.gather(1, pos)
    return best_i.cpu().numpy()
