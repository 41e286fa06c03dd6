"""``clip-interrogator-demo``: the clip-interrogator predictor over the demo's own label banks.

The registered ``clip-interrogator`` reads the ``clip-interrogator`` package's banks and captions
with BLIP; the demo has no trained BLIP, so here the caption is the demo subject and scene phrases
closest to the image by CLIP ("two red stars at sunset"), and the mediums / flavours / artists /
movements come from the demo's ``labels/`` folder (trendings stay the package's). The modes
(fast / classic / best), prompt assembly and the label-embedding cache are the predictor's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from predictors.base import Prediction
from predictors.interrogator import Interrogator
from predictors.interrogator_labels import (
    BANKS,
    LabelBanks,
    label_embeddings,
    load_bank,
)
from predictors.registry import add_predictor_config, list_predictors
from promptblend.clip import embed_images, load_clip
from promptblend.errors import ConfigError

NAME = "clip-interrogator-demo"
CAPTION_BANKS = ("subjects", "scenes")


def _read(path: Path) -> list[str]:
    return [s for s in (line.strip() for line in path.read_text(encoding="utf-8").splitlines()) if s]


def demo_bank(labels: Path, bank: str, limit: int | None) -> list[str]:
    """Phrases of ``bank`` from ``labels/<bank>.txt`` (artists as "by X"), else the package's."""
    path = labels / f"{bank}.txt"
    if not path.is_file():
        return load_bank(bank, limit)
    items = _read(path)[:limit]
    return [f"by {a}" for a in items] if bank == "artists" else items


class DemoInterrogator(Interrogator):
    """CLIP Interrogator whose caption is ranked from the demo's subject and scene phrases."""

    def __init__(self, labels: str | None = None, **params: Any) -> None:
        params.setdefault("caption_model", None)
        super().__init__(**params)
        if not labels or not Path(labels, "subjects.txt").is_file():
            raise ConfigError(f"{NAME} needs labels=DIR holding subjects.txt and scenes.txt (got {labels!r})")
        self.params["labels"] = labels

    def cache_inputs(self) -> dict[str, Any]:
        """The label files and the CLIP weights file are named by path only: key them by content."""
        import hashlib

        h = hashlib.sha256()
        for f in sorted(Path(self.params["labels"]).glob("*.txt")):
            h.update(f.name.encode() + f.read_bytes())
        inputs = {"labels": h.hexdigest()[:16]}
        weights = self.params["clip_pretrained"]
        if weights and Path(weights).is_file():
            st = Path(weights).stat()
            inputs["clip"] = f"{st.st_size}:{st.st_mtime_ns}"
        return inputs

    def setup(self) -> None:
        """Load CLIP (seeded when random), the demo label banks' cached embeddings, and MiniLM."""
        import torch

        from promptblend.text import load_text_model

        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            self.clip = load_clip(p["clip_model"], p["clip_pretrained"], self.device)
        labels = Path(p["labels"])
        self.banks = self._banks(BANKS, labels)
        self.caption_banks = self._banks(CAPTION_BANKS, labels)
        load_text_model()

    def _banks(self, names, labels: Path) -> LabelBanks:
        phrases, embeds, spans = [], [], {}
        for bank in names:
            items = demo_bank(labels, bank, self.params["label_limit"])
            spans[bank] = (len(phrases), len(phrases) + len(items))
            phrases.extend(items)
            embeds.append(label_embeddings(self.clip, items, f"demo-{bank}", self.params["label_cache"]))
        return LabelBanks(phrases, np.concatenate(embeds), spans)

    def preprocess(self, image) -> Any:
        """Image -> CLIP pixels (no captioner input)."""
        return self.clip.preprocess(image)

    def collate(self, items: list[Any]) -> Any:
        """Stack the pixel tensors."""
        import torch

        return torch.stack(items)

    def predict_batch(self, batch: Any) -> Prediction:
        """Caption from the subject and scene banks, interrogate, embed the prompts with MiniLM."""
        import torch

        from promptblend.text import encode

        feats = torch.from_numpy(embed_images(self.clip, batch)).to(self.clip.device)
        subjects = self.caption_banks.top(feats, 1, "subjects")
        scenes = self.caption_banks.top(feats, 1, "scenes")
        captions = [f"{s[0]} {c[0]}" for s, c in zip(subjects, scenes)]
        prompts = self.interrogate(feats, captions)
        return Prediction(encode(prompts, show_progress=False), prompts)


def register() -> str:
    """Add the ``clip-interrogator-demo`` registry entry (once per process); return its name."""
    if NAME not in list_predictors():
        add_predictor_config(
            NAME,
            {
                "class": f"{__name__}:DemoInterrogator",
                "description": "clip-interrogator over the demo's label banks; caption = best demo subject + scene",
                "params": {
                    "labels": None,
                    "clip_model": "pb-tiny-clip",
                    "clip_pretrained": None,
                    "mode": "fast",
                    "max_flavors": 3,
                    "min_flavors": 1,
                    "flavor_intermediate_count": 32,
                    "chunk_size": 1024,
                    "label_limit": None,
                    "label_cache": None,
                    "seed": 0,
                },
            },
        )
    return NAME
