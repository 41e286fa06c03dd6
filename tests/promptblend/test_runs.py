"""Runs: format, alignment checks, atomic writes, cache hits and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from promptblend.errors import AlignmentError, EmbeddingError, RunError
from promptblend.runkey import run_key
from promptblend.runs import Run, build_run, list_runs, load_run, save_run
from promptblend.vectors import l2_normalise


def _emb(n, seed=0):
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, 384)))


def test_save_load_roundtrip(tmp_path):
    run = Run(["a", "b", "c"], _emb(3), {"predictor": "x"}, ["p a", "p b", "p c"])
    save_run(tmp_path / "r", run)
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == ["embeddings.npy", "ids.txt", "meta.json", "prompts.txt"]
    back = load_run(tmp_path / "r")
    assert back.ids == run.ids and back.prompts == run.prompts
    np.testing.assert_array_equal(back.embeddings, run.embeddings)
    assert back.embeddings.dtype == np.float32
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["n"] == 3 and "versions" in meta and "created" in meta
    assert list_runs(tmp_path) == [tmp_path / "r"]


@pytest.mark.parametrize(
    "ids,emb,err,match",
    [
        (["a", "b"], _emb(3), AlignmentError, "3 rows but there are 2 ids"),
        (["a", "a", "b"], _emb(3), AlignmentError, "repeats ids"),
        (["a", "b"], np.zeros((2, 512), np.float32), EmbeddingError, "384 columns"),
        (["a", "b"], np.full((2, 384), np.nan, np.float32), EmbeddingError, "NaN/inf in 2 rows"),
        (["a"], np.zeros(384, np.float32), EmbeddingError, "2-d"),
    ],
)
def test_bad_runs_raise(ids, emb, err, match):
    with pytest.raises(err, match=match):
        Run(ids, emb)


def test_tampered_run_folder_is_caught(tmp_path):
    save_run(tmp_path / "r", Run(["a", "b"], _emb(2)))
    (tmp_path / "r" / "ids.txt").write_text("a\nb\nc\n")
    with pytest.raises(AlignmentError):
        load_run(tmp_path / "r")
    (tmp_path / "r" / "meta.json").unlink()
    with pytest.raises(RunError, match="missing meta.json"):
        load_run(tmp_path / "r")
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object))  # np.save pickles object arrays by default
    (tmp_path / "s").mkdir()
    os.replace(tmp_path / "obj.npy", tmp_path / "s" / "embeddings.npy")
    (tmp_path / "s" / "ids.txt").write_text("a\n")
    (tmp_path / "s" / "meta.json").write_text("{}")
    with pytest.raises(RunError, match="corrupt"):
        load_run(tmp_path / "s")  # pickled content is refused, never executed


def test_select_reorders_and_checks():
    run = Run(["a", "b", "c"], _emb(3), prompts=["x", "y", "z"])
    sub = run.select(["c", "a"])
    assert sub.ids == ["c", "a"] and sub.prompts == ["z", "x"]
    np.testing.assert_array_equal(sub.embeddings[0], run.embeddings[2])
    with pytest.raises(AlignmentError, match="lacks 1"):
        run.select(["a", "q"])


def test_build_run_caches_and_fails_cleanly(tmp_path):
    ids = [f"i{k}" for k in range(10)]
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return _emb(b - a, seed=a), None

    run = build_run(tmp_path, "p", {"k": 1}, ids, "fp", compute, shard_size=4, progress=False)
    assert calls == [(0, 4), (4, 8), (8, 10)] and run.ids == ids
    again = build_run(tmp_path, "p", {"k": 1}, ids, "fp", compute, shard_size=4, progress=False)
    assert len(calls) == 3 and again.meta["cache_hit"]
    build_run(tmp_path, "p", {"k": 2}, ids, "fp", compute, shard_size=4, progress=False)
    assert len(calls) == 6  # another config is another key

    def broken(a, b):
        if a >= 4:
            raise RuntimeError("boom")
        return _emb(b - a), None

    with pytest.raises(RuntimeError):
        build_run(tmp_path, "q", {}, ids, "fp", broken, shard_size=4, progress=False)
    key = run_key("q", {}, "fp")
    assert not (tmp_path / key).exists()  # no finished (partial) run
    assert sorted(p.name for p in (tmp_path / f"{key}.partial").glob("rows-*")) == ["rows-000000000-000000004.npz"]
    # a resume with another shard size recomputes rather than mixing layouts
    run = build_run(tmp_path, "q", {}, ids, "fp", compute, shard_size=3, progress=False)
    assert run.ids == ids and len(run) == 10

    def bad_rows(a, b):
        e = _emb(b - a)
        e[0, 0] = np.inf
        return e, None

    with pytest.raises(EmbeddingError, match="NaN/inf"):
        build_run(tmp_path, "r", {}, ids, "fp", bad_rows, shard_size=4, progress=False)
    assert not (tmp_path / run_key("r", {}, "fp")).exists()


WORKER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from promptblend.runs import build_run
    out, log, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ids = [f"img{k:03d}" for k in range(40)]
    def compute(a, b):
        time.sleep(slow)
        with open(log, "a") as f:
            f.write(f"{a}\\n")
        rng = np.random.default_rng(a)
        return rng.normal(size=(b - a, 384)).astype(np.float32), [f"text {k}" for k in range(a, b)]
    build_run(out, "slowpred", {"v": 1}, ids, "fp", compute, shard_size=5, progress=False)
    """
)


def test_kill_and_resume_gives_same_result(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    log = tmp_path / "log.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(log), "0.4"])
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().split())
    assert 3 <= done_before < 8, "the kill must land mid-run"
    assert not list_runs(tmp_path / "runs")
    subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), str(log), "0"], check=True)
    starts = [int(x) for x in log.read_text().split()]
    recomputed = starts[done_before:]
    # only shards that were not finished are computed again (at most the one in flight repeats)
    assert len(recomputed) <= 8 - done_before + 1 and sorted(set(starts)) == list(range(0, 40, 5))
    resumed = load_run(list_runs(tmp_path / "runs")[0])
    subprocess.run([sys.executable, str(script), str(tmp_path / "fresh"), str(tmp_path / "l2"), "0"], check=True)
    fresh = load_run(list_runs(tmp_path / "fresh")[0])
    assert resumed.ids == fresh.ids and resumed.prompts == fresh.prompts
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)


def _constant(prompts):
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return _emb(b - a, seed=a), prompts[a:b]

    return compute, calls


def test_carriage_returns_in_prompts_do_not_poison_the_cache(tmp_path):
    # a quoted CSV cell "line one\r\nline two" used to be written raw and split on reload
    ids = ["a", "b", "c"]
    prompts = ["line one\r\nline two", "ends in cr\r", "back\\slash \u2028 sep"]
    compute, calls = _constant(prompts)
    run = build_run(tmp_path, "truth", {}, ids, "fp", compute, shard_size=2, progress=False)
    assert run.prompts == prompts
    again = build_run(tmp_path, "truth", {}, ids, "fp", compute, shard_size=2, progress=False)
    assert again.meta["cache_hit"] and again.prompts == prompts and len(calls) == 2
    assert len((tmp_path / run_key("truth", {}, "fp") / "prompts.txt").read_text().splitlines()) == 3


def test_a_resumed_shard_keeps_its_prompts_exactly(tmp_path):
    ids = ["a", "b", "c", "d"]
    prompts = ["x\x00", "y\r", "\\n", "\ud800"]

    def first_half_only(a, b):
        if a >= 2:
            raise RuntimeError("killed")
        return _emb(b - a, seed=a), prompts[a:b]

    with pytest.raises(RuntimeError):
        build_run(tmp_path, "p", {}, ids, "fp", first_half_only, shard_size=2, progress=False)
    compute, calls = _constant(prompts)
    run = build_run(tmp_path, "p", {}, ids, "fp", compute, shard_size=2, progress=False)
    assert calls == [(2, 4)] and run.prompts == prompts
    assert load_run(run.path).prompts == prompts


@pytest.mark.parametrize("damage", ["truncate_npy", "extra_id", "junk_meta", "bad_utf8", "other_ids"])
def test_a_cache_entry_failing_its_checks_is_rebuilt(tmp_path, damage, caplog):
    ids = ["a", "b", "c"]
    compute, calls = _constant(["p"] * 3)
    run = build_run(tmp_path, "p", {}, ids, "fp", compute, shard_size=8, progress=False)
    folder = run.path
    if damage == "truncate_npy":
        data = (folder / "embeddings.npy").read_bytes()
        (folder / "embeddings.npy").write_bytes(data[: len(data) // 2])
    elif damage == "extra_id":
        (folder / "ids.txt").write_text("a\nb\nc\nd\n")
    elif damage == "junk_meta":
        (folder / "meta.json").write_text("[1, 2")
    elif damage == "bad_utf8":
        (folder / "prompts.txt").write_bytes(b"\xff\xfe\n\n\n")
    else:
        (folder / "ids.txt").write_text("x\ny\nz\n")
    rebuilt = build_run(tmp_path, "p", {}, ids, "fp", compute, shard_size=8, progress=False)
    assert len(calls) == 2 and not rebuilt.meta.get("cache_hit")
    assert "fails its checks" in caplog.text
    np.testing.assert_array_equal(load_run(folder).embeddings, run.embeddings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # nothing left aside


def test_a_failure_before_any_shard_leaves_no_partial_folder(tmp_path):
    from promptblend.errors import BadImageError

    def bad_image(a, b):
        raise BadImageError("x.png", "truncated")

    with pytest.raises(BadImageError):
        build_run(tmp_path, "p", {}, ["a"], "fp", bad_image, progress=False)
    assert list(tmp_path.iterdir()) == []


WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from promptblend.runs import build_run
    out, log = sys.argv[1], sys.argv[2]
    def compute(a, b):
        with open(log, "a") as f:
            f.write(f"{a}\\n")
        time.sleep(0.1)
        return np.random.default_rng(a).normal(size=(b - a, 384)).astype(np.float32), None
    run = build_run(out, "two", {}, [f"i{k}" for k in range(30)], "fp", compute, shard_size=3, progress=False)
    print(run.meta.get("cache_hit", False))
    """
)


def test_two_writers_on_one_run_key(tmp_path):
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    args = [sys.executable, str(script), str(tmp_path / "runs"), str(tmp_path / "log")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["False", "True"]  # one computed, the other waited and read it
    assert len((tmp_path / "log").read_text().split()) == 10  # every shard computed once
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_key("two", {}, "fp")]


def test_truth_csv_with_a_crlf_inside_a_quoted_cell(tmp_path):
    from promptblend.truth import truth_run

    csv = tmp_path / "prompts.csv"
    csv.write_bytes(b'imgId,prompt\na,"line one\r\nline two"\nb,plain prompt\n')
    first = truth_run(csv, cache=tmp_path / "cache")
    second = truth_run(csv, cache=tmp_path / "cache")  # used to fail: the cache split the cell in two
    assert second.meta["cache_hit"] and second.prompts == first.prompts == ["line one\r\nline two", "plain prompt"]
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
