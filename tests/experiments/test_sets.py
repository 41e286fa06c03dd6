"""experiments.sets convert between folder, shards and Parquet (DiffusionDB's metadata + parts as a source): original bytes, truth kept, a truncated
image refused (or skipped with --skip-bad), a null prompt never the text "None"; the competition's layout
as an --exclude set."""

from __future__ import annotations

import pytest
from imageset_sources import SOURCES, samples, write_source

from experiments.sets import TARGETS, convert, main
from promptblend.errors import TruthError
from promptblend.imagesets import open_image_set


@pytest.mark.parametrize("src", SOURCES)
def test_every_source_converts_to_every_other_with_the_same_bytes_and_truth(src, tmp_path):
    rows = samples(5)
    ref = open_image_set(write_source(src, rows, tmp_path / "src"))
    for to in TARGETS:  # DiffusionDB's layout is read, not written
        info = convert(ref, tmp_path / to, to=to, shard_size=2)
        out = tmp_path / to / "images.parquet" if to == "parquet" else tmp_path / to
        got = open_image_set(out)
        assert info["n_images"] == 5 and got.ids == ref.ids, to
        assert got.fingerprint() == ref.fingerprint() and got.prompt_list() == ref.prompt_list(), to


def test_a_truncated_png_is_refused_or_skipped_and_counted(tmp_path, capsys):
    src = write_source("folder", samples(5, bad=2), tmp_path / "src")
    assert main(["convert", str(src), "--out", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad image") and "img02" in err[0] and "--skip-bad" in err[0]
    assert not (tmp_path / "shards").exists()
    assert main(["convert", str(src), "--out", str(tmp_path / "shards"), "--skip-bad"]) == 0
    assert "skipped 1 bad image(s)" in capsys.readouterr().out
    assert open_image_set(tmp_path / "shards").ids == ["img00", "img01", "img03", "img04"]


def test_a_null_parquet_prompt_stays_no_prompt(tmp_path):
    rows = [(i, d, None if i == "img01" else p) for i, d, p in samples(3)]
    src = write_source("parquet", rows, tmp_path / "pq")
    convert(src, tmp_path / "folder", to="folder")
    csv = (tmp_path / "folder" / "prompts.csv").read_text()
    assert "img01" not in csv and "None" not in csv
    again = open_image_set(convert(src, tmp_path / "pq2", to="parquet")["file"])
    assert "img01" not in again.prompts and "None" not in again.prompts.values()
    with pytest.raises(TruthError, match="every key or none"):  # shards cannot hold a key without .txt
        convert(src, tmp_path / "shards", to="shards")


def test_the_competition_layout_is_one_set_for_generate_exclude(tmp_path):
    from experiments.generate.prompts import exclusion_prompts

    rows = samples(3)
    comp = write_source("folder", rows, tmp_path / "val")  # val/images/*.png + val/prompts.csv
    assert sorted(exclusion_prompts(comp)) == sorted(p for _, _, p in rows)
    assert sorted(exclusion_prompts(comp / "prompts.csv")) == sorted(p for _, _, p in rows)
    pq = write_source("parquet", rows, tmp_path / "pq")
    assert sorted(exclusion_prompts(pq)) == sorted(p for _, _, p in rows)
