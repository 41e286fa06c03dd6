"""The demo task generator: seeded, grouped splits, images that show what the prompt says, cached."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from experiments.demo.data import (
    SPLITS,
    DataConfig,
    label_banks,
    make_demo_data,
    noise_words,
)
from experiments.demo.render import COLOURS, OBJECTS, SCENES, STYLES
from promptblend.errors import ConfigError
from promptblend.imagesets import open_image_set

SMALL = DataConfig(n_pairs=60, n_bank=40, image_size=32, seed=3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo"), SMALL, progress=False)


def _scenes(demo, split):
    with open(demo.split_dir(split) / "scenes.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_splits_are_image_sets_with_truth(demo):
    assert sum(demo.counts[s] for s in SPLITS) == SMALL.n_pairs
    for split in SPLITS:
        images = open_image_set(demo.images(split))
        assert len(images) == demo.counts[split] > 0
        assert images.prompt_list() == demo.prompts(split)
        pixels = demo.pixels(split)
        assert pixels.shape == (len(images), 32, 32, 3) and pixels.dtype == np.uint8
        assert np.array_equal(np.asarray(images.load(0)), pixels[0])


def test_prompts_name_what_the_image_shows(demo):
    for split in SPLITS:
        for row, prompt in zip(_scenes(demo, split), demo.prompts(split)):
            assert row["colour"] in COLOURS and row["object"] in OBJECTS
            assert row["colour"] in prompt and row["scene"] in prompt and row["style"] in prompt
            assert row["object"] in prompt or OBJECTS[row["object"]] in prompt


def test_groups_do_not_cross_splits(demo):
    groups = {s: {r["group"] for r in _scenes(demo, s)} for s in SPLITS}
    assert not groups["train"] & groups["test"]
    assert not groups["train"] & groups["val"]
    assert not groups["val"] & groups["test"]


def test_bank_holds_train_prompts_and_no_held_out_prompt(demo):
    bank = demo.bank.read_text(encoding="utf-8").splitlines()
    assert len(bank) == len(set(bank)) == demo.counts["train"] + SMALL.n_bank
    assert set(demo.prompts("train")) <= set(bank)
    assert not set(bank) & (set(demo.prompts("val")) | set(demo.prompts("test")))


def test_label_banks_cover_every_visible_phrase(demo):
    banks = label_banks()
    assert set(SCENES) <= set(banks["scenes"]) and set(STYLES) <= set(banks["mediums"])
    assert "two red balls" in banks["subjects"] and "an orange star" in banks["subjects"]
    for name, lines in banks.items():
        assert (demo.labels / f"{name}.txt").read_text(encoding="utf-8").splitlines() == lines
    visible = set(COLOURS) | set(OBJECTS)
    assert not any(set(f.lower().split()) & visible for f in noise_words()["flavours"])


def test_seeded_and_cached(tmp_path, demo):
    again = make_demo_data(tmp_path, SMALL, progress=False)
    assert again.prompts("test") == demo.prompts("test")
    assert np.array_equal(again.pixels("train"), demo.pixels("train"))
    stamp = (again.root / "manifest.json").stat().st_mtime_ns
    reused = make_demo_data(tmp_path, SMALL, progress=False)
    assert reused.root == again.root and (reused.root / "manifest.json").stat().st_mtime_ns == stamp
    other = make_demo_data(tmp_path, DataConfig(n_pairs=60, n_bank=40, image_size=32, seed=4), progress=False)
    assert other.root != again.root and other.prompts("train") != again.prompts("train")
    assert not list(tmp_path.glob(".*tmp"))


def test_bad_sizes_raise(tmp_path):
    with pytest.raises(ConfigError):
        make_demo_data(tmp_path, DataConfig(n_pairs=5))
    with pytest.raises(ConfigError):
        make_demo_data(tmp_path, DataConfig(image_size=8))
