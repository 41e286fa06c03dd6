"""``clip-interrogator``: BLIP caption + the label-bank phrases closest to the open_clip image embedding.

Modes as in the ``clip-interrogator`` package: ``fast`` (caption + the top phrases of all banks),
``classic`` (caption, medium, artist, trending, movement, top flavours) and ``best`` (a greedy
flavour chain from the caption, then the best of caption / classic / fast / chain by CLIP
similarity). The prompt is embedded with MiniLM. Label embeddings are cached per CLIP model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from promptblend.errors import ConfigError

from .base import Prediction, Predictor
from .captioner import CaptionModel, load_caption_model
from .clip import ClipBundle, embed_images, embed_texts, load_clip
from .interrogator_labels import LabelBanks

MODES = ("fast", "classic", "best")


class Interrogator(Predictor):
    """CLIP Interrogator over batches: CLIP + BLIP in the main process, preprocessing in workers."""

    produces_text = True

    def __init__(
        self,
        clip_model: str = "ViT-H-14",
        clip_pretrained: str | None = "laion2b_s32b_b79k",
        caption_model: str = "Salesforce/blip-image-captioning-large",
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
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"clip-interrogator mode must be one of {', '.join(MODES)}, got '{mode}'")
        super().__init__(
            clip_model=clip_model, clip_pretrained=clip_pretrained, caption_model=caption_model,
            caption_max_length=caption_max_length, caption_num_beams=caption_num_beams, mode=mode,
            max_flavors=max_flavors, min_flavors=min_flavors, flavor_intermediate_count=flavor_intermediate_count,
            chunk_size=chunk_size, label_limit=label_limit, label_cache=label_cache, seed=seed,
        )
        self.clip: ClipBundle | None = None
        self.captioner: CaptionModel | None = None
        self.banks: LabelBanks | None = None

    # ------------------------------------------------------------ setup / batching

    def setup(self) -> None:
        """Load CLIP (seeded when random), BLIP, the label embeddings (cached) and MiniLM."""
        import torch

        from promptblend.embed import load_text_model

        p = self.params
        self.captioner = load_caption_model(p["caption_model"], self.device, p["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            self.clip = load_clip(p["clip_model"], p["clip_pretrained"], self.device)
        self.banks = LabelBanks.build(self.clip, p["label_limit"], p["label_cache"])
        load_text_model()

    def preprocess(self, image) -> Any:
        """Image -> (CLIP pixels, BLIP pixels)."""
        return self.clip.preprocess(image), self.captioner.pixels(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack both pixel tensors."""
        import torch

        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])

    def predict_batch(self, batch: Any) -> Prediction:
        """Caption, embed, pick phrases, then embed the prompts with MiniLM."""
        import torch

        from promptblend.embed import encode

        clip_pixels, blip_pixels = batch
        p = self.params
        captions = self.captioner.generate(blip_pixels, None, p["caption_num_beams"], p["caption_max_length"])
        feats = torch.from_numpy(embed_images(self.clip, clip_pixels)).to(self.clip.device)
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
        out = []
        for b, caption in enumerate(captions):
            chain = self.chain(feats[b], caption)
            candidates = [caption, classic[b], fast[b], chain]
            out.append(candidates[int(np.argmax(self._similarities(feats[b], candidates)))])
        return out

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

    def chain(self, feat: Any, caption: str) -> str:
        """Greedy flavour chain from the caption: add the phrase that most raises CLIP similarity."""
        p = self.params
        phrases = self.banks.top(feat[None], p["flavor_intermediate_count"], chunk_size=p["chunk_size"])[0]
        remaining = list(dict.fromkeys(phrases))
        best = curr = caption
        best_sim = curr_sim = self._similarities(feat, [caption])[0]
        for step in range(p["max_flavors"]):
            if not remaining:
                break
            candidates = [f"{curr}, {f}" for f in remaining]
            sims = self._similarities(feat, candidates)
            j = int(np.argmax(sims))
            if sims[j] > best_sim:
                best, best_sim = candidates[j], sims[j]
            if not (sims[j] > curr_sim or step < p["min_flavors"]):
                break
            curr, curr_sim = candidates[j], sims[j]
            remaining.pop(j)
            if self._at_max_len(curr):
                break
        return best

    # ------------------------------------------------------------ CLIP text helpers

    def _similarities(self, feat: Any, texts: list[str]) -> np.ndarray:
        emb = embed_texts(self.clip, texts, batch_size=self.params["chunk_size"])
        return emb @ feat.float().cpu().numpy()

    def _at_max_len(self, text: str) -> bool:
        return bool(self.clip.tokenizer([text])[0][-1] != 0)

    def _truncate(self, text: str) -> str:
        """Keep whole ", "-separated parts while the text fits CLIP's context."""
        parts = text.split(", ")
        out = parts[0]
        for part in parts[1:]:
            if self._at_max_len(out + part):
                break
            out += ", " + part
        return out
