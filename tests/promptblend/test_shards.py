"""WebDataset shard sets: every source form, fingerprints equal to the folder's, splits, truth, named errors."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from promptblend.errors import ShardError
from promptblend.imagesets import open_image_set, part_index
from promptblend.imagesets.shards import ShardSet, shard_name, write_shard
from promptblend.truth import load_truth


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "png")
    return buf.getvalue()


def _samples(shard: int, n: int = 4) -> list[dict]:
    return [{"__key__": f"{shard}{i:03d}", "png": _png(shard * 100 + i), "txt": f"prompt {shard} {i}",
             "json": {"seed": i}} for i in range(n)]


@pytest.fixture
def shards(tmp_path):
    """Three shards of four samples, plus the same images as a folder with prompts.csv."""
    import pandas as pd

    root, folder = tmp_path / "set", tmp_path / "folder"
    folder.mkdir()
    rows = []
    for s in range(3):
        write_shard(root / shard_name("val", s), _samples(s))
        for sample in _samples(s):
            (folder / f"{sample['__key__']}.png").write_bytes(sample["png"])
            rows.append((sample["__key__"], sample["txt"]))
    pd.DataFrame(rows, columns=["imgId", "prompt"]).to_csv(folder / "prompts.csv", index=False)
    return root, folder


def test_every_source_form_opens_the_same_set(shards):
    root, folder = shards
    forms = [root, str(root / "val-{000000..000002}.tar"), [str(root / shard_name("val", s)) for s in range(3)],
             [f"pipe:cat {root / shard_name('val', s)}" for s in range(3)]]
    sets = [open_image_set(f) for f in forms]
    as_folder = open_image_set(folder)
    for s in sets:
        assert isinstance(s, ShardSet) and s.ids == as_folder.ids and s.counts == [4, 4, 4]
        assert s.fingerprint() == as_folder.fingerprint()  # content-defined: folder and shards share run keys
        assert s.prompt_list() == as_folder.prompt_list()
    images = list(sets[1].samples(2, 7))
    assert [x.id for x in images] == as_folder.ids[2:7]
    assert [x.prompt for x in images] == as_folder.prompt_list()[2:7]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(as_folder.load(k + 2))) for k, x in enumerate(images))
    assert np.array_equal(np.asarray(sets[0].load(9)), np.asarray(as_folder.load(9)))


def test_a_different_image_changes_the_fingerprint(shards, tmp_path):
    root, _ = shards
    before = open_image_set(root).fingerprint()
    changed = _samples(1)
    changed[2]["png"] = _png(999)
    write_shard(root / shard_name("val", 1), changed)
    assert open_image_set(root).fingerprint() != before


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_splits_cover_each_sample_once_by_shard(shards, world_size):
    s = open_image_set(shards[0])
    parts = [[x.id for x in s.samples(rank=r, world_size=world_size)] for r in range(world_size)]
    assert sorted(i for p in parts for i in p) == sorted(s.ids)
    for r, p in enumerate(parts):  # whole shards: shard k goes to part k % world_size
        assert p == [i for k in range(r, 3, world_size) for i in s.ids[4 * k : 4 * k + 4]]
    resumed = [x.id for x in s.samples(start=6, rank=0, world_size=world_size)]
    assert resumed == [i for i in parts[0] if s.ids.index(i) >= 6]


def test_dataloader_workers_split_shards(shards):
    from torch.utils.data import DataLoader, IterableDataset

    class Ids(IterableDataset):
        def __init__(self, image_set):
            self.image_set = image_set

        def __iter__(self):
            assert part_index()[1] == 2
            return (x.id for x in self.image_set.samples())

    s = open_image_set(shards[0])
    got = list(DataLoader(Ids(s), batch_size=None, num_workers=2))
    assert sorted(got) == sorted(s.ids) and len(got) == len(s.ids)


def test_truth_from_a_shard_set_equals_truth_from_prompts_csv(shards):
    root, folder = shards
    a, b = load_truth(str(root / "val-{000000..000002}.tar")), load_truth(folder / "prompts.csv")
    assert a.ids == b.ids
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)


def test_score_and_leaderboard_take_a_shard_set_as_truth(shards, tmp_path, capsys):
    from ensemble.score import main as score_main
    from experiments.leaderboard.__main__ import main as board_main
    from promptblend.runs import Run, save_run
    from promptblend.submission import write_submission

    root, folder = shards
    truth = load_truth(folder / "prompts.csv")
    write_submission(tmp_path / "sub.csv", truth.ids, truth.embeddings)
    pattern = str(root / "val-{000000..000002}.tar")
    assert score_main(["--truth", pattern, "--submission", str(tmp_path / "sub.csv")]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(1.0, abs=1e-5)
    save_run(tmp_path / "runs" / "perfect", Run(truth.ids, truth.embeddings, {"predictor": "copy"}))
    assert board_main(["--runs", str(tmp_path / "runs"), "--truth", str(root), "--out", str(tmp_path / "b")]) == 0
    assert "perfect" in capsys.readouterr().out


def _write_raw_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _bad_sets(root):
    """name -> (source, shard named in the error, key named in the error)."""
    good = [root / shard_name("val", s) for s in range(2)]
    for s, p in enumerate(good):
        write_shard(p, _samples(s))
    cases = {"missing shard": ([good[0], root / "val-000009.tar"], "val-000009.tar", None)}
    data = good[1].read_bytes()
    (root / "trunc.tar").write_bytes(data[: len(data) // 2 + 100])
    cases["truncated tar"] = ([good[0], root / "trunc.tar"], "trunc.tar", "1001")
    _write_raw_tar(root / "noimg.tar", [("k1.png", _png(1)), ("k1.txt", b"a"), ("k2.txt", b"b"), ("k2.json", b"{}")])
    cases["key without image"] = ([root / "noimg.tar"], "noimg.tar", "k2")
    _write_raw_tar(root / "notxt.tar", [("k1.png", _png(1)), ("k1.txt", b"a"), ("k2.png", _png(2))])
    cases["key without text"] = ([root / "notxt.tar"], "notxt.tar", "k2")
    cases["duplicate key across shards"] = ([good[0], good[1], good[0]], "val-000000.tar", "0000")
    _write_raw_tar(root / "dup.tar", [("k1.png", _png(1)), ("k1.txt", b"a"), ("k1.png", _png(2)), ("k1.txt", b"a")])
    cases["duplicate key in a shard"] = ([root / "dup.tar"], "dup.tar", "k1")
    _write_raw_tar(root / "latin1.tar", [("k1.png", _png(1)), ("k1.txt", "café".encode("latin-1"))])
    cases["text not UTF-8"] = ([root / "latin1.tar"], "latin1.tar", "k1")
    return cases


def test_each_bad_shard_gives_a_named_error_naming_shard_and_key(tmp_path):
    for what, (source, shard, key) in _bad_sets(tmp_path).items():
        with pytest.raises(ShardError) as err:
            open_image_set([str(p) for p in source])
        assert shard in err.value.shard, what
        assert err.value.key == key, (what, str(err.value))
        if key is not None:
            assert repr(key) in str(err.value), what


def test_a_shard_changed_after_opening_is_named_not_misaligned(shards):
    root, _ = shards
    s = open_image_set(root)
    write_shard(root / shard_name("val", 1), list(reversed(_samples(1))))
    with pytest.raises(ShardError, match="changed since the set was opened") as err:
        list(s.samples(4, 8))
    assert err.value.key == "1003"
    write_shard(root / shard_name("val", 1), _samples(1, n=2))
    with pytest.raises(ShardError, match="changed since the set was opened"):
        list(s.samples(4, 8))
