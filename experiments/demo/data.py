"""The demo task: seeded prompts from templates and the images they describe, split by prompt group.

Part of each prompt is visible (object count, colour and kind, scene, style: :mod:`.render` draws
them); the rest is noise a model cannot see (modifier phrases, artists, movements, taken from the
``clip-interrogator`` package's label banks). Splits are grouped by (colour, object, scene), so no
test image shares its visible subject and scene with a training prompt: test prompts are not
near-copies of training prompts. A prompt bank of further template prompts (no images) feeds kNN.

Layout of a generated folder (written atomically, reused when present)::

    manifest.json                 parameters and counts
    {train,val,test}/images/*.png + prompts.csv + scenes.csv + pixels.npy (uint8 N x S x S x 3)
    bank.txt                      training prompts + further template prompts, one per line
    labels/*.txt                  the label banks a CLIP interrogator ranks (subjects, scenes, ...)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from promptblend import atomic
from promptblend.errors import ConfigError

from .render import COLOURS, OBJECTS, SCENES, STYLES, Scene, render

log = logging.getLogger(__name__)

#: Bump when the generator's output changes, so cached folders are not reused.
DATA_VERSION = 3
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: Artists an interrogator ranks: the popular ones prompts use, then others from the package's list.
LABEL_ARTISTS = 300
#: Flavour phrases prompts draw from (the package's most common first).
N_FLAVOURS = 600
#: Artists prompts name, most popular first (all in clip-interrogator's ``artists.txt``): real
#: prompts reuse a few dozen names far more than the other thousands.
POPULAR_ARTISTS = (
    "Greg Rutkowski", "Alphonse Mucha", "Artgerm", "Thomas Kinkade", "Makoto Shinkai", "Studio Ghibli",
    "Hayao Miyazaki", "Claude Monet", "Salvador Dali", "Beeple", "James Gurney", "Ilya Kuvshinov",
    "Craig Mullins", "Simon Stalenhag", "Ruan Jia", "Peter Mohrbacher", "Boris Vallejo", "Frank Frazetta",
    "H. R. Giger", "Moebius", "Dan Mumford", "Kilian Eng", "Jakub Rozalski", "Tyler Edlin",
    "John Singer Sargent", "Gustav Klimt", "Andy Warhol", "Katsushika Hokusai", "Norman Rockwell",
    "Edward Hopper", "Rembrandt", "Johannes Vermeer", "Ivan Aivazovsky", "Albert Bierstadt",
)


@dataclass(frozen=True)
class DataConfig:
    """How much to generate: image pairs, extra bank prompts, image side, seed."""

    n_pairs: int = 2000
    n_bank: int = 2000
    image_size: int = 64
    seed: int = 0

    def key(self) -> str:
        """Short hash naming the cached folder."""
        blob = json.dumps({"v": DATA_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass
class DemoData:
    """A generated demo folder."""

    root: Path
    config: DataConfig
    counts: dict[str, int] = field(default_factory=dict)

    def split_dir(self, split: str) -> Path:
        """``root/<split>`` (holds ``images/`` and ``prompts.csv``)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
        return self.root / split

    def images(self, split: str) -> Path:
        """The image folder of ``split``."""
        return self.split_dir(split) / "images"

    def prompts_csv(self, split: str) -> Path:
        """The truth ``imgId,prompt`` file of ``split``."""
        return self.split_dir(split) / "prompts.csv"

    def pixels(self, split: str) -> np.ndarray:
        """All images of ``split`` as uint8 (N, S, S, 3), in id order."""
        return atomic.load_npy(self.split_dir(split) / "pixels.npy")

    def prompts(self, split: str) -> list[str]:
        """Truth prompts of ``split`` in id order."""
        with open(self.prompts_csv(split), newline="", encoding="utf-8") as f:
            return [row["prompt"] for row in csv.DictReader(f)]

    @property
    def bank(self) -> Path:
        """The demo's prompt bank (training prompts + further template prompts)."""
        return self.root / "bank.txt"

    @property
    def labels(self) -> Path:
        """Folder of label banks (``subjects.txt``, ``scenes.txt``, ``mediums.txt``, ...)."""
        return self.root / "labels"


# --- word lists ------------------------------------------------------------------------------------


def _package_lines(name: str) -> list[str]:
    text = resources.files("clip_interrogator").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


_VISIBLE_WORDS = set(COLOURS) | set(OBJECTS) | set(OBJECTS.values()) | {
    w for phrase in list(SCENES) + list(STYLES) for w in phrase.split() if len(w) > 3
}


@lru_cache(maxsize=1)
def noise_words() -> dict[str, list[str]]:
    """Modifier phrases, artists and movements from clip-interrogator's banks, minus visible words.

    Flavours keep the package's order (most common first) and artists put the popular ones first:
    prompts draw both with a skew towards the top, as real prompts do ("highly detailed" is
    frequent, "dogs playing poker" rare). ``all_artists`` is the package's whole usable list.
    """

    def usable(s: str) -> bool:
        return s.isascii() and 2 < len(s) <= 32 and not (set(s.lower().split()) & _VISIBLE_WORDS)

    flavours = [s for s in _package_lines("flavors.txt") if usable(s)][:N_FLAVOURS]
    all_artists = [s for s in _package_lines("artists.txt") if usable(s)]
    known = set(all_artists)
    artists = [a for a in POPULAR_ARTISTS if a in known]
    movements = [s for s in _package_lines("movements.txt") if usable(s)]
    return {"flavours": flavours, "artists": artists, "movements": movements, "all_artists": all_artists}


# --- prompts ---------------------------------------------------------------------------------------


def sample_scene(rng: random.Random) -> Scene:
    """A uniformly random visible content."""
    return Scene(
        count=rng.choice((1, 1, 2, 3)),
        colour=rng.choice(list(COLOURS)),
        obj=rng.choice(list(OBJECTS)),
        scene=rng.choice(list(SCENES)),
        style=rng.choice(list(STYLES)),
    )


def _skewed(items: list[str], rng: random.Random, power: float) -> str:
    """An item drawn with a skew towards the front of ``items``."""
    return items[int(len(items) * rng.random() ** power)]


def compose_prompt(scene: Scene, rng: random.Random) -> str:
    """One prompt for ``scene``: a template over its visible phrases plus 1-3 noise modifiers."""
    words = noise_words()
    mods = []
    for _ in range(rng.choice((1, 2, 2, 3))):
        m = _skewed(words["flavours"], rng, 3)
        if m not in mods:
            mods.append(m)
    tail = ", ".join(mods)
    what = f"{scene.subject()} {scene.scene}"
    template = rng.randrange(4)
    if template == 0:
        prompt = f"{scene.style} of {what}, {tail}"
    elif template == 1:
        prompt = f"{what}, {scene.style}, {tail}"
    elif template == 2:
        prompt = f"{scene.style} of {what}, {tail}, by {_skewed(words['artists'], rng, 2)}"
    else:
        prompt = f"{what}, {scene.style}, {tail}, {rng.choice(words['movements'])}"
    return prompt


def group_of(scene: Scene) -> str:
    """The split group: prompts sharing colour, object and scene stay in one split."""
    return f"{scene.colour}|{scene.obj}|{scene.scene}"


def split_of_groups(seed: int) -> dict[str, str]:
    """Every (colour, object, scene) group -> its split, by a seeded shuffle (60/20/20)."""
    groups = [f"{c}|{o}|{s}" for c in COLOURS for o in OBJECTS for s in SCENES]
    random.Random(f"split-{seed}").shuffle(groups)
    cut1 = int(len(groups) * SPLIT_FRACTIONS[0])
    cut2 = cut1 + int(len(groups) * SPLIT_FRACTIONS[1])
    return {g: "train" if i < cut1 else "val" if i < cut2 else "test" for i, g in enumerate(groups)}


def bank_prompts(n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` further template prompts (distinct, none in ``exclude``): what other users wrote."""
    rng = random.Random(f"bank-{seed}")
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        p = compose_prompt(sample_scene(rng), rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def label_banks() -> dict[str, list[str]]:
    """The phrase lists an interrogator ranks: every subject, scene, medium, flavour, artist, movement."""
    subjects = [
        Scene(n, c, o, "", "").subject() for n in (1, 2, 3) for c in COLOURS for o in OBJECTS
    ]
    words = noise_words()
    mediums = list(dict.fromkeys(_package_lines("mediums.txt") + list(STYLES)))
    return {
        "subjects": subjects,
        "scenes": list(SCENES),
        "mediums": mediums,
        "flavors": words["flavours"],
        "artists": list(dict.fromkeys(words["artists"] + words["all_artists"]))[:LABEL_ARTISTS],
        "movements": words["movements"],
    }


# --- generation ------------------------------------------------------------------------------------


def make_demo_data(root: str | Path, config: DataConfig | None = None, progress: bool = True) -> DemoData:
    """Generate the demo task under ``root/data-<key>`` (or reuse it when already there)."""
    config = config or DataConfig()
    if config.n_pairs < 30 or config.n_bank < 0 or config.image_size < 16:
        raise ConfigError(f"demo data needs n_pairs >= 30, n_bank >= 0, image_size >= 16 (got {config})")
    folder = Path(root) / f"data-{config.key()}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        log.info("demo data: reusing %s", folder)
        return DemoData(folder, config, meta["counts"])
    from promptblend.progress import progress_bar

    rng = random.Random(f"pairs-{config.seed}")
    split_map = split_of_groups(config.seed)
    rows: dict[str, list[tuple[str, Scene, str]]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    while sum(len(v) for v in rows.values()) < config.n_pairs:
        scene = sample_scene(rng)
        prompt = compose_prompt(scene, rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        i = sum(len(v) for v in rows.values())
        rows[split_map[group_of(scene)]].append((f"demo{i:05d}", scene, prompt))
    np_rng = np.random.default_rng(config.seed)
    with atomic.atomic_dir(folder) as tmp:
        bar = progress_bar(total=config.n_pairs, desc="demo images", unit="img", disable=not progress)
        for split, items in rows.items():
            _write_split(tmp / split, items, config.image_size, np_rng, bar)
        bar.close()
        train_prompts = [p for _, _, p in rows["train"]]
        held_out = {p for s in ("val", "test") for _, _, p in rows[s]}
        extra = bank_prompts(config.n_bank, config.seed, exclude=held_out | set(train_prompts))
        (tmp / "bank.txt").write_text("\n".join(train_prompts + extra) + "\n", encoding="utf-8")
        (tmp / "labels").mkdir()
        for name, lines in label_banks().items():
            (tmp / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts = {s: len(v) for s, v in rows.items()} | {"bank": len(train_prompts) + len(extra)}
        meta = {"version": DATA_VERSION, "config": asdict(config), "counts": counts}
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    log.info("demo data: wrote %s %s", folder, counts)
    return DemoData(folder, config, counts)


def _write_split(folder: Path, items, size: int, rng: np.random.Generator, bar) -> None:
    (folder / "images").mkdir(parents=True)
    pixels = np.zeros((len(items), size, size, 3), np.uint8)
    prompts, scenes = io.StringIO(), io.StringIO()
    pw, sw = csv.writer(prompts, lineterminator="\n"), csv.writer(scenes, lineterminator="\n")
    pw.writerow(["imgId", "prompt"])
    sw.writerow(["imgId", "count", "colour", "object", "scene", "style", "group"])
    for k, (id_, scene, prompt) in enumerate(sorted(items, key=lambda t: t[0])):
        image = render(scene, size, rng)
        image.save(folder / "images" / f"{id_}.png", optimize=False, compress_level=1)
        pixels[k] = np.asarray(image)
        pw.writerow([id_, prompt])
        sw.writerow([id_, scene.count, scene.colour, scene.obj, scene.scene, scene.style, group_of(scene)])
        bar.update(1)
    (folder / "prompts.csv").write_text(prompts.getvalue(), encoding="utf-8")
    (folder / "scenes.csv").write_text(scenes.getvalue(), encoding="utf-8")
    with open(folder / "pixels.npy", "wb") as f:
        np.save(f, pixels, allow_pickle=False)
