"""``clip-interrogator-demo``: the clip-interrogator predictor over the demo's own label banks.

The registered ``clip-interrogator`` reads the ``clip-interrogator`` package's banks and captions
with BLIP; the demo has no trained BLIP, so here the caption source ranks the demo subject and scene
phrases closest to the image by CLIP ("two red stars at sunset"), and the label source reads the
mediums / flavours / artists / movements from the demo's ``labels/`` folder (trendings stay the
package's). Both are passed to the predictor; the modes (fast / classic / best), prompt assembly and
the label-embedding cache are the predictor's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predictors.interrogator import Interrogator
from predictors.interrogator_labels import LabelBanks, load_bank
from predictors.registry import add_predictor_config, list_predictors
from promptblend.clip import ClipBundle
from promptblend.errors import ConfigError

NAME = "clip-interrogator-demo"
CAPTION_BANKS = ("subjects", "scenes")


class DemoLabels:
    """Label source: ``labels/<bank>.txt`` (artists as "by X"), else the package's bank."""

    def __init__(self, folder: str | Path, limit: int | None = None) -> None:
        self.folder, self.limit = Path(folder), limit
        if not (self.folder / "subjects.txt").is_file():
            raise ConfigError(f"{NAME} needs labels=DIR holding subjects.txt and scenes.txt (got {str(folder)!r})")

    def phrases(self, bank: str) -> list[str]:
        """The phrases of ``bank``."""
        path = self.folder / f"{bank}.txt"
        if not path.is_file():
            return load_bank(bank, self.limit)
        lines = path.read_text(encoding="utf-8").splitlines()
        items = [s for s in (line.strip() for line in lines) if s][: self.limit]
        return [f"by {a}" for a in items] if bank == "artists" else items

    def cache_inputs(self) -> dict[str, Any]:
        """The label folder's content digest."""
        from promptblend.digest import folder_digest

        return {"demo_labels": folder_digest(self.folder)[:16]}


class BankCaptions:
    """Caption source: the subject and the scene phrase closest to the image by CLIP, joined."""

    def __init__(self, labels: DemoLabels, cache: str | None = None) -> None:
        self.labels, self.cache = labels, cache
        self.banks: LabelBanks | None = None

    def setup(self, clip: ClipBundle, device: str | None = None) -> None:
        """Embed (or read the cached embeddings of) the subject and scene phrases."""
        self.banks = LabelBanks.build(clip, self.labels, self.cache, CAPTION_BANKS)

    def transform(self) -> None:
        """None: the captions come from the CLIP features, not from pixels."""
        return None

    def collate(self, items: list[Any]) -> None:
        """Nothing to batch."""
        return

    def captions(self, batch: Any, features: Any) -> list[str]:
        """One "{subject} {scene}" caption per image."""
        subjects = self.banks.top(features, 1, "subjects")
        scenes = self.banks.top(features, 1, "scenes")
        return [f"{s[0]} {c[0]}" for s, c in zip(subjects, scenes)]

    def cache_inputs(self) -> dict[str, Any]:
        """The phrases' identity (the same folder as the label source)."""
        return self.labels.cache_inputs()


def demo_interrogator(
    labels: str | None = None, label_limit: int | None = None, label_cache: str | None = None, **params: Any
) -> Interrogator:
    """The registry's constructor for ``clip-interrogator-demo``: an Interrogator with the demo's sources."""
    source = DemoLabels(labels or "", label_limit)
    return Interrogator(
        caption_model=None, label_limit=label_limit, label_cache=label_cache, **params,
        label_source=source, caption_source=BankCaptions(source, label_cache),
    )


def register() -> str:
    """Add the ``clip-interrogator-demo`` registry entry (once per process); return its name."""
    if NAME not in list_predictors():
        add_predictor_config(
            NAME,
            {
                "class": f"{__name__}:demo_interrogator",
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
