"""``clip-interrogator``: BLIP caption + the label-bank phrases closest to the open_clip image embedding.

Modes as in the ``clip-interrogator`` package: ``fast`` (caption + the top phrases of all banks),
``classic`` (caption, medium, artist, trending, movement, top flavours) and ``best`` (a greedy
flavour chain from the caption, then the best of caption / classic / fast / chain by CLIP
similarity). The prompt is embedded with MiniLM. Label embeddings are cached per CLIP model.

Where the phrases and the caption come from are objects passed in: a :class:`LabelSource`
(default: the package's banks, :class:`PackageLabels`) and a :class:`CaptionSource` (default: the
``caption_model`` image-to-text model, :class:`ModelCaptions`). Deliberate differences from the
package are listed in ``tests/predictors/test_parity_interrogator.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from promptblend.clip import ClipBundle, embed_images, load_clip
from promptblend.errors import ConfigError

from .base import Prediction, Predictor
from .captioner import ModelCaptions
from .interrogator_labels import (
    LabelBanks,
    LabelSource,
    PackageLabels,
    embed_short_texts,
    embed_tokens,
    short_context_ok,
)

MODES = ("fast", "classic", "best")


class PairTransform:
    """Image -> (CLIP pixels, caption input): two light, picklable transforms (the second may be None)."""

    def __init__(self, clip: Callable[[Any], Any], caption: Callable[[Any], Any] | None) -> None:
        self.clip, self.caption = clip, caption

    def __call__(self, image: Any) -> tuple[Any, Any]:
        return self.clip(image), None if self.caption is None else self.caption(image)


class CaptionSource(Protocol):
    """Where the interrogator's captions come from: a model over pixels, or phrases ranked by CLIP."""

    def setup(self, clip: ClipBundle, device: str | None) -> None:
        """Load what it needs, given the interrogator's loaded CLIP; called once."""
        ...

    def transform(self) -> Callable[[Any], Any] | None:
        """A light, picklable image -> input step for DataLoader workers; None when pixels are unused."""
        ...

    def collate(self, items: list[Any]) -> Any:
        """Inputs -> a batch."""
        ...

    def captions(self, batch: Any, features: Any) -> list[str]:
        """One caption per image of ``batch``, whose CLIP image features (B, D) are ``features``."""
        ...

    def cache_inputs(self) -> dict[str, Any]:
        """Content identity of what it reads by path (model folders, phrase lists), for run cache keys."""
        ...


class ChainTokenizer:
    """Token ids of chain candidates ``"{prefix}, {phrase}"`` from cached pieces.

    open_clip's BPE splits at the comma, so the ids are ``sot + ids(prefix) + ids(",") + ids(phrase)
    + eot`` (cut to the context as the tokenizer cuts) whenever the prefix ends in a letter or digit:
    the same as tokenizing each candidate, without re-tokenizing the prefix thousands of times.
    Other prefixes (or tokenizers) fall back to tokenizing the strings.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.fast = all(hasattr(tokenizer, a) for a in ("encode", "sot_token_id", "eot_token_id", "context_length")) and (
            getattr(tokenizer, "reduction_fn", None) is None
        )
        self._ids: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = self.tok.encode(text)
        return self._ids[text]

    def __call__(self, prefix: str, phrases: list[str]) -> Any:
        """(len(phrases), context) token ids of the candidates."""
        import torch

        if not (self.fast and prefix and prefix[-1].isalnum()):
            return self.tok([f"{prefix}, {f}" for f in phrases])
        ctx, eot = self.tok.context_length, self.tok.eot_token_id
        head = [self.tok.sot_token_id] + self.tok.encode(prefix) + self._encode(",")
        out = torch.zeros(len(phrases), ctx, dtype=torch.long)
        for i, f in enumerate(phrases):
            ids = head + self._encode(f) + [eot]
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = eot
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class Interrogator(Predictor):
    """CLIP Interrogator over batches: CLIP + the caption source in the main process, preprocessing in workers.

    ``label_source`` and ``caption_source`` replace the package's banks and the ``caption_model``
    captioner (the ``caption_*`` and ``label_limit`` settings then do not apply).
    """

    produces_text = True
    #: The label cache is an output folder, and the caption model is keyed by its source.
    unhashed_paths = ("label_cache", "caption_model")

    def __init__(
        self,
        clip_model: str = "ViT-H-14",
        clip_pretrained: str | None = "laion2b_s32b_b79k",
        caption_model: str | None = "Salesforce/blip-image-captioning-large",
        caption_max_length: int = 32,
        caption_num_beams: int = 1,
        mode: str = "best",
        max_flavors: int = 32,
        min_flavors: int = 8,
        flavor_intermediate_count: int = 2048,
        chunk_size: int = 2048,
        label_limit: int | None = None,
        label_cache: str | None = None,
        seed: int = 0,
        *,
        label_source: LabelSource | None = None,
        caption_source: CaptionSource | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"clip-interrogator mode must be one of {', '.join(MODES)}, got '{mode}'")
        if caption_source is None and not caption_model:
            raise ConfigError("clip-interrogator needs caption_model=NAME|DIR (or a caption source passed in)")
        super().__init__(
            clip_model=clip_model, clip_pretrained=clip_pretrained, caption_model=caption_model,
            caption_max_length=caption_max_length, caption_num_beams=caption_num_beams, mode=mode,
            max_flavors=max_flavors, min_flavors=min_flavors, flavor_intermediate_count=flavor_intermediate_count,
            chunk_size=chunk_size, label_limit=label_limit, label_cache=label_cache, seed=seed,
        )
        self.label_source = label_source or PackageLabels(label_limit)
        self.caption_source = caption_source or ModelCaptions(
            caption_model, num_beams=caption_num_beams, max_new_tokens=caption_max_length, seed=seed
        )
        self.clip: ClipBundle | None = None
        self.banks: LabelBanks | None = None
        self.chain_tokenizer: ChainTokenizer | None = None

    def cache_inputs(self) -> dict[str, Any]:
        """Local CLIP weights by content, plus what the label and caption sources read."""
        return {**super().cache_inputs(), **self.label_source.cache_inputs(), **self.caption_source.cache_inputs()}

    # ------------------------------------------------------------ setup / batching

    def setup(self) -> None:
        """Load CLIP (seeded when random), the caption source, the label embeddings (cached) and MiniLM."""
        import torch

        from promptblend.text import load_text_model

        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            self.clip = load_clip(p["clip_model"], p["clip_pretrained"], self.device)
        self.caption_source.setup(self.clip, self.device)
        self.banks = LabelBanks.build(self.clip, self.label_source, p["label_cache"])
        self.chain_tokenizer = ChainTokenizer(self.clip.tokenizer)
        load_text_model()

    def transform(self) -> PairTransform:
        """CLIP's image transform and the caption source's, without any model (what workers get)."""
        return PairTransform(self.clip.preprocess, self.caption_source.transform())

    def preprocess(self, image) -> Any:
        """Image -> (CLIP pixels, the caption source's input)."""
        return self.transform()(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack the CLIP pixels; the caption source collates its inputs."""
        import torch

        return torch.stack([a for a, _ in items]), self.caption_source.collate([b for _, b in items])

    def predict_batch(self, batch: Any) -> Prediction:
        """Embed, caption, pick phrases, then embed the prompts with MiniLM."""
        import torch

        from promptblend.text import encode

        clip_pixels, caption_inputs = batch
        feats = torch.from_numpy(embed_images(self.clip, clip_pixels)).to(self.clip.device)
        captions = self.caption_source.captions(caption_inputs, feats)
        prompts = self.interrogate(feats, captions)
        return Prediction(encode(prompts, show_progress=False), prompts)

    # ------------------------------------------------------------ modes

    def interrogate(self, feats: Any, captions: list[str]) -> list[str]:
        """Prompts for image features (B, D) and their captions in the configured mode."""
        mode = self.params["mode"]
        if mode == "fast":
            return self.fast(feats, captions)
        if mode == "classic":
            return self.classic(feats, captions)
        fast, classic = self.fast(feats, captions), self.classic(feats, captions, self.params["max_flavors"])
        chains = self.chain(feats, captions)
        candidates = {b: [c, classic[b], fast[b], chains[b]] for b, c in enumerate(captions)}
        sims = self._similarities(feats, candidates)
        return [candidates[b][int(np.argmax(sims[b]))] for b in range(len(captions))]

    def fast(self, feats: Any, captions: list[str]) -> list[str]:
        """Caption + the top ``max_flavors`` phrases of all banks, cut to CLIP's context."""
        tops = self.banks.top(feats, self.params["max_flavors"], chunk_size=self.params["chunk_size"])
        return [self._truncate(", ".join([c, *t])) for c, t in zip(captions, tops)]

    def classic(self, feats: Any, captions: list[str], n_flavors: int = 3) -> list[str]:
        """Caption, medium, artist, trending, movement, then the top flavours."""
        top = {b: self.banks.top(feats, 1, b) for b in ("mediums", "artists", "trendings", "movements")}
        flavors = self.banks.top(feats, n_flavors, "flavors", self.params["chunk_size"])
        out = []
        for i, caption in enumerate(captions):
            medium, artist = top["mediums"][i][0], top["artists"][i][0]
            rest = f"{artist}, {top['trendings'][i][0]}, {top['movements'][i][0]}, {', '.join(flavors[i])}"
            out.append(self._truncate(f"{caption} {rest}" if caption.startswith(medium) else f"{caption}, {medium} {rest}"))
        return out

    def chain(self, feats: Any, captions: list[str]) -> list[str]:
        """Greedy flavour chains from the captions: each step adds the phrase that most raises CLIP
        similarity (at least ``min_flavors`` steps); all images' candidates are embedded together."""
        p = self.params
        tops = self.banks.top(feats, p["flavor_intermediate_count"], chunk_size=p["chunk_size"])
        remaining = [list(dict.fromkeys(t)) for t in tops]
        first = self._similarities(feats, {b: [c] for b, c in enumerate(captions)})
        best, curr = list(captions), list(captions)
        best_sim = [float(first[b][0]) for b in range(len(captions))]
        curr_sim = list(best_sim)
        active = set(range(len(captions)))
        chain_tokens = self.chain_tokenizer
        for step in range(p["max_flavors"]):
            active = {b for b in active if remaining[b]}
            if not active:
                break
            candidates = {b: [f"{curr[b]}, {f}" for f in remaining[b]] for b in sorted(active)}
            if short_context_ok(self.clip):
                sims = self._token_similarities(feats, {b: chain_tokens(curr[b], remaining[b]) for b in candidates})
            else:
                sims = self._similarities(feats, candidates)
            for b, cands in candidates.items():
                j = int(np.argmax(sims[b]))
                if sims[b][j] > best_sim[b]:
                    best[b], best_sim[b] = cands[j], float(sims[b][j])
                if not (sims[b][j] > curr_sim[b] or step < p["min_flavors"]):
                    active.discard(b)
                    continue
                curr[b], curr_sim[b] = cands[j], float(sims[b][j])
                remaining[b].pop(j)
                if self._at_max_len(curr[b]):
                    active.discard(b)
        return best

    # ------------------------------------------------------------ CLIP text helpers

    def _similarities(self, feats: Any, texts: dict[int, list[str]]) -> dict[int, np.ndarray]:
        """CLIP similarity of each image ``b`` to its texts ``texts[b]``, all texts embedded in one pass."""
        flat = [t for b in texts for t in texts[b]]
        emb = embed_short_texts(self.clip, flat, batch_size=self.params["chunk_size"])
        return _per_image(emb, feats, {b: len(items) for b, items in texts.items()})

    def _token_similarities(self, feats: Any, tokens: dict[int, Any]) -> dict[int, np.ndarray]:
        """Like :meth:`_similarities`, from token ids per image."""
        import torch

        flat = torch.cat(list(tokens.values()))
        size = self.params["chunk_size"]
        emb = np.concatenate([embed_tokens(self.clip, flat[s : s + size]) for s in range(0, len(flat), size)])
        return _per_image(emb, feats, {b: len(t) for b, t in tokens.items()})

    def _at_max_len(self, text: str) -> bool:
        return bool(self.clip.tokenizer([text])[0][-1] != 0)

    def _truncate(self, text: str) -> str:
        """Keep whole ", "-separated parts while the text fits CLIP's context."""
        if not self._at_max_len(text):
            return text
        parts = text.split(", ")
        out = parts[0]
        for part in parts[1:]:
            if self._at_max_len(out + part):
                break
            out += ", " + part
        return out


def _per_image(emb: np.ndarray, feats: Any, sizes: dict[int, int]) -> dict[int, np.ndarray]:
    """Split text embeddings laid out image after image (``sizes[b]`` rows for image ``b``) and
    score each block against that image's CLIP features."""
    f = feats.float().cpu().numpy()
    out, start = {}, 0
    for b, n in sizes.items():
        out[b] = emb[start : start + n] @ f[b]
        start += n
    return out
