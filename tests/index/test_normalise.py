"""Prompt clean-up cases (taken from the real Discord bank) and exact deduplication."""

import pytest

from index.normalise import CleanStats, clean_unique, normalise_prompt


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  a   dog \t on  a  log ", "a dog on a log"),
        ("first dreams 3551287903`", "first dreams"),
        ("`a castle at dawn`", "a castle at dawn"),
        ('"a cat on a mat"', "a cat on a mat"),
        ("“fancy quotes”", "fancy quotes"),
        ("a photo --ar 16:9 --v 4", "a photo"),
        ("glass bottle filled with a colorful universe--steps 100", "glass bottle filled with a colorful universe"),
        ("a grizzly bear chugging a beer —width 1280", "a grizzly bear chugging a beer"),
        ("8k resolution – w 1024", "8k resolution"),
        ("croissant in a ceramic cup — n 9", "croissant in a ceramic cup"),
        ("a castle -s50 -W512 -H512 -S123", "a castle"),
        ("parametric architecture - s 3924062463", "parametric architecture"),
        ("portrait by armstrong, rolf seed=1064516654", "portrait by armstrong, rolf"),
        ("by greg tocchini, (anime:1.5),", "by greg tocchini, (anime:1.5)"),
        # kept as they are: hyphenated words, a dash used as punctuation, short numbers
        ("spider-man fights a t-rex in x-ray", "spider-man fights a t-rex in x-ray"),
        ("the cretaceous – paleogene extinction event", "the cretaceous – paleogene extinction event"),
        ("a 1990s photo of 3 cats, 8k", "a 1990s photo of 3 cats, 8k"),
        # nothing left
        ("1234567890", ""),
        ("   ", ""),
        ("``", ""),
        ("--seed 5", ""),
    ],
)
def test_normalise(raw, clean):
    assert normalise_prompt(raw) == clean


def test_clean_unique_dedups_case_insensitively_and_keeps_first():
    records = [(0, "A Cat"), (0, "a cat  "), (0, ""), (1, "a dog 12345678"), (1, "a dog"), (1, "a CAT`")]
    stats = CleanStats()
    assert list(clean_unique(records, stats)) == ["A Cat", "a dog"]
    assert stats.as_dict() == {"read": 6, "empty": 1, "exact_duplicates": 3, "kept": 2}
    assert stats.per_source == {0: {"read": 3, "kept": 1}, 1: {"read": 3, "kept": 1}}


def test_clean_unique_streams():
    """It is a generator: nothing is read before the first item is asked for."""
    consumed = []

    def records():
        for i in range(10**9):
            consumed.append(i)
            yield 0, f"prompt {i}"

    gen = clean_unique(records(), CleanStats())
    assert next(gen) == "prompt 0"
    assert len(consumed) == 1
