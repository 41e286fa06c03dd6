"""The image-set contract, the same assertions for every source (folder, shards, Parquet); declared sizes
of shard sets; Parquet specifics; the one batch dataset."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from imageset_sources import KIND_OF, SOURCES, png, samples, truncated, write_diffusiondb, write_source

from promptblend.errors import BadImageError, ImageSetError, ShardError, TruthError
from promptblend.imagesets import open_image_set, source_kind
from promptblend.imagesets.batches import BadBatch, Batches, no_collate, row_batches


@pytest.fixture(params=SOURCES)
def kind(request):
    return request.param


def _pixels(image_set, rows):
    return [np.asarray(image_set.load(r)) for r in rows]


def test_every_source_gives_the_same_ids_truth_fingerprint_and_pixels(kind, tmp_path):
    rows = samples(7)
    folder = open_image_set(write_source("folder", rows, tmp_path / "ref"))
    s = open_image_set(write_source(kind, rows, tmp_path / kind))
    assert source_kind(write_source(kind, rows, tmp_path / "again")) == KIND_OF.get(kind, kind)
    assert s.ids == folder.ids == [i for i, _, _ in rows]
    assert s.prompt_list() == [p for _, _, p in rows]
    assert s.fingerprint() == folder.fingerprint()  # content-defined: the same run key from every source
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(s, [0, 4, 6]), _pixels(folder, [0, 4, 6])))
    got = list(s.samples(2, 5))
    assert [x.id for x in got] == s.ids[2:5] and [x.prompt for x in got] == s.prompt_list()[2:5]
    assert all(x.error is None and x.image.size == (24, 24) for x in got)


def test_a_bad_image_is_a_per_sample_error_a_named_error_or_the_same_skip(kind, tmp_path):
    rows = samples(7, bad=3)
    root = write_source(kind, rows, tmp_path / kind)
    s = open_image_set(root)
    (bad,) = [x for x in s.samples() if x.error is not None]  # iteration carries the error, no exception
    assert bad.id == "img03" and bad.image is None and "truncated" in bad.error.reason
    with pytest.raises(BadImageError, match="img03"):
        s.load(3)
    kept = open_image_set(root, skip_bad=True, workers=0)
    assert kept.ids == [i for i, _, _ in rows if i != "img03"]
    assert [i for i, _ in kept.skipped] == ["img03"]
    assert np.array_equal(np.asarray(kept.load(3)), np.asarray(s.load(4)))  # no silent shift after the skip
    same = open_image_set(write_source("folder", [r for r in rows if r[0] != "img03"], tmp_path / "clean"))
    assert kept.fingerprint() == same.fingerprint()


def test_the_batch_dataset_keeps_any_order_over_workers(kind, tmp_path):
    from torch.utils.data import DataLoader

    s = open_image_set(write_source(kind, samples(7), tmp_path / kind))

    def keys_and_sums(order, workers):
        data = Batches(s, order, lambda image, key: int(np.asarray(image).sum()))
        return list(DataLoader(data, batch_size=None, collate_fn=no_collate, num_workers=workers))

    by_rows = keys_and_sums(row_batches(0, 7, 3), 0)
    assert [k for k, _ in by_rows] == [[0, 1, 2], [3, 4, 5], [6]]
    shuffled = [[5, 1], [13, 0, 8], [2]]  # keys beyond n wrap (epoch * n + row), any order, rows repeated
    assert keys_and_sums(shuffled, 2) == keys_and_sums(shuffled, 0)
    sums = dict(zip(range(7), (v for _, vs in by_rows for v in vs)))
    assert keys_and_sums(shuffled, 2)[1][1] == [sums[6], sums[0], sums[1]]


def test_a_bad_sample_makes_a_bad_batch_not_an_exception(kind, tmp_path):
    from torch.utils.data import DataLoader

    s = open_image_set(write_source(kind, samples(5, bad=1), tmp_path / kind))
    data = Batches(s, row_batches(0, 5, 2), lambda image, key: key)
    batches = list(DataLoader(data, batch_size=None, collate_fn=no_collate, num_workers=1))
    assert isinstance(batches[0], BadBatch) and [b.id for b in batches[0].bad] == ["img01"]
    assert batches[1:] == [([2, 3], [2, 3]), ([4], [4])]


# ---------------------------------------------------------------- shard sets: declared sizes


def _shard_set(tmp_path, n=6, shard_size=3):
    return write_source("shards", samples(n), tmp_path / "set", shard_size)


def test_an_empty_tar_is_named_or_skipped(tmp_path):
    root = _shard_set(tmp_path)
    with tarfile.open(root / "part-000001.tar", "w"):
        pass  # a valid tar with no members
    with pytest.raises(ShardError, match=r"part-000001.tar.*holds 0 samples, sizes.json declares 3"):
        open_image_set(root)
    kept = open_image_set(root, skip_bad=True, workers=0)
    assert kept.ids == ["img00", "img01", "img02"] and kept.skipped[0][0] == "part-000001.tar"
    (root / "sizes.json").unlink()
    with pytest.raises(ShardError, match="no samples"):  # without sizes.json, still never dropped silently
        open_image_set(root)


def test_a_short_tar_is_named(tmp_path):
    root = _shard_set(tmp_path)
    sizes = json.loads((root / "sizes.json").read_text())
    (root / "sizes.json").write_text(json.dumps({**sizes, "part-000000.tar": 4}))
    with pytest.raises(ShardError, match="part-000000.tar.*holds 3 samples, sizes.json declares 4"):
        open_image_set(root)


def test_a_truncated_last_shard_is_named_or_cut_off(tmp_path):
    root = _shard_set(tmp_path, n=7)  # shards of 3, 3, 1
    last = root / "part-000002.tar"
    data = last.read_bytes()
    last.write_bytes(data[:700])  # inside the only sample
    with pytest.raises(ShardError, match="part-000002.tar.*truncated"):
        open_image_set(root)
    kept = open_image_set(root, skip_bad=True, workers=0)
    assert kept.ids == [f"img{i:02d}" for i in range(6)] and kept.skipped[0][0] == "part-000002.tar"
    root2 = _shard_set(tmp_path / "two", n=7)
    whole = (root2 / "part-000002.tar").read_bytes()
    (root2 / "part-000002.tar").write_bytes(whole[:512])  # only the first header: nothing after it
    with pytest.raises(ShardError, match="part-000002.tar"):
        open_image_set(root2)


# ---------------------------------------------------------------- parquet specifics


def test_a_null_parquet_prompt_is_no_truth_for_that_row_never_the_text_none(tmp_path):
    rows = [(i, d, None if i == "img02" else p) for i, d, p in samples(4)]
    s = open_image_set(write_source("parquet", rows, tmp_path / "pq"))
    assert "img02" not in s.prompts and "None" not in s.prompts.values()
    with pytest.raises(TruthError, match="img02"):
        s.prompt_list()
    assert [x.prompt for x in s.samples()][2] is None


def test_parquet_reads_hf_structs_with_paths_and_plain_byte_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.png").write_bytes(png(1))
    pq.write_table(pa.table({"image": [{"bytes": None, "path": "a.png"}, {"bytes": png(2), "path": "b.png"}],
                             "text": ["one", "two"]}), tmp_path / "hf.parquet")
    s = open_image_set(tmp_path / "hf.parquet")
    assert s.ids == ["a", "b"] and s.prompt_list() == ["one", "two"]
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "b.png").write_bytes(png(2))
    assert s.fingerprint() == open_image_set([tmp_path / "a.png", tmp_path / "files" / "b.png"]).fingerprint()
    pq.write_table(pa.table({"jpg": [png(3)], "caption": ["x"]}), tmp_path / "plain.parquet")
    assert open_image_set(tmp_path / "plain.parquet").ids == ["00000000"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ImageSetError, match="broken.parquet"):
        open_image_set(tmp_path / "broken.parquet")
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "noimage.parquet")
    with pytest.raises(ImageSetError, match="no image column"):
        open_image_set(tmp_path / "noimage.parquet")


def test_diffusiondb_metadata_is_the_rows_whose_part_is_here(tmp_path):
    import shutil

    rows = samples(7)
    metadata = write_diffusiondb(rows, tmp_path / "ddb", part_size=3)
    s = open_image_set(metadata)
    assert s.ids == [i for i, _, _ in rows] and "absent" not in s.prompts  # the part not downloaded is left out
    assert s.groups == (4, 3)  # rows by row group (4 each): the absent part's row is not counted
    # one part removed (the zip of images 0-2): its rows go too, and the others still decode in place
    (tmp_path / "ddb" / "images" / "part-000001.zip").unlink()
    fewer = open_image_set(metadata)
    assert fewer.ids == [i for i, _, _ in rows[3:]]
    assert np.array_equal(np.asarray(fewer.load(2)), np.asarray(s.load(5)))
    # an image missing from a part that is here: a per-sample error naming it
    (tmp_path / "ddb" / "images" / "part-000002" / "img04.png").unlink()
    (missing,) = [x for x in open_image_set(metadata).samples() if x.error is not None]
    assert missing.id == "img04" and "img04.png" in missing.error.reason
    # no part here at all: a named error saying where it looked
    shutil.rmtree(tmp_path / "ddb" / "images")
    shutil.rmtree(tmp_path / "ddb" / "part-000003")
    with pytest.raises(ImageSetError, match="none of its 8 rows has its image part here"):
        open_image_set(metadata)


def test_a_folder_that_is_no_image_set_says_what_would_be(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match="images/ and prompts.csv"):
        open_image_set(tmp_path / "empty")


def test_truncated_bytes_helper_really_fails_to_decode():
    from promptblend.imagesets import decode_image

    with pytest.raises(BadImageError, match="truncated"):
        decode_image(truncated(png(0)), "x")
