"""index.build under hostile conditions (issue 14): a prompt file rewritten in place, texts that need
escaping, two builders on one folder, a full disk, damaged inputs, non-UTF-8 bytes."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.build import BuildConfig, build_bank, build_lock
from index.build import main as build_main
from index.normalise import normalise_prompt
from promptblend.bank import PROMPTS_FILE, load_bank
from promptblend.errors import BankError, DiskFullError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TORCH = ("--values-backend", "torch")


def _real_prompts(shared_data: Path, start: int, stop: int) -> list[str]:
    with gzip.open(shared_data / "prompt-bank" / "curated-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, start, stop)]


def _cfg(*paths: Path, **kw) -> BuildConfig:
    return BuildConfig(prompts=[str(p) for p in paths], values_backend="torch", shard_size=32, **kw)


def _litter(out: Path) -> list[str]:
    """Temp files anywhere under ``out`` (what a half-finished write leaves)."""
    return [p.name for p in out.rglob("*") if ".tmp" in p.name]


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_prompt_file_rewritten_in_place_is_rebuilt_not_served_stale(tmp_path, shared_data):
    src, out = tmp_path / "e.txt", tmp_path / "bank"
    old, new = _real_prompts(shared_data, 300, 330), _real_prompts(shared_data, 400, 450)
    src.write_text("\n".join(old) + "\n")
    first = build_bank(_cfg(src), out, progress=False)
    src.write_text("\n".join(new) + "\n")  # same path, other prompts
    second = build_bank(_cfg(src), out, progress=False)
    assert second["build_hash"] != first["build_hash"]
    assert second["counts"]["read"] == len(new)
    assert load_bank(out).prompts[0] == normalise_prompt(new[0])


def test_every_text_the_normaliser_keeps_round_trips_through_prompts_txt(tmp_path, shared_data):
    odd = ["a path C:\\new\\table, no newline", "line one\r\nline two", "para\u2028graph\u2029end", "nul\x00inside",
           "vertical\x0btab and\x0cform feed", "next\x85line", "a literal \\u2028 and \\\\ pair", "tab\tinside",
           "ünïcödé 🎨 prompt"]
    src = tmp_path / "odd.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": t}) for t in odd + _real_prompts(shared_data, 0, 5)) + "\n")
    out = tmp_path / "bank"
    m = build_bank(_cfg(src), out, progress=False)
    expected = [normalise_prompt(t) for t in odd + _real_prompts(shared_data, 0, 5)]
    assert m["counts"]["kept"] == len(expected) == len(set(expected))
    assert load_bank(out).prompts == expected
    assert (out / PROMPTS_FILE).read_bytes().count(b"\n") == len(expected)


def test_a_format_1_bank_reads_its_prompts_unescaped(tmp_path, shared_data):
    src = tmp_path / "b.txt"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 5)) + "\n")
    out = tmp_path / "bank"
    build_bank(_cfg(src), out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = 1  # written before prompts.txt was line-encoded: a backslash is itself
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / PROMPTS_FILE).write_text("".join(f"C:\\new {i}\n" for i in range(5)))
    assert load_bank(out).prompts == [f"C:\\new {i}" for i in range(5)]


def _start_build(src: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "index.build", "--prompts", str(src), "--out", str(out), *TORCH,
                                 "--shard-size", "16", "-v"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)


def test_a_second_builder_waits_saying_who_holds_the_folder(tmp_path, shared_data):
    src, out = tmp_path / "b.txt", tmp_path / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 40)) + "\n")
    out.mkdir()
    with build_lock(out):
        proc = _start_build(src, out, tmp_path / "err.log")
        deadline = time.time() + 120
        while time.time() < deadline and "waiting" not in (tmp_path / "err.log").read_text():
            time.sleep(0.2)
        err = (tmp_path / "err.log").read_text()
        assert f"is being built by pid {os.getpid()}" in err and "waiting" in err
        time.sleep(1)
        assert proc.poll() is None and not (out / "manifest.json").exists(), "it waits for the lock"
    assert proc.wait(timeout=300) == 0
    assert load_bank(out).prompts[0] == normalise_prompt(_real_prompts(shared_data, 0, 1)[0])
    assert not (out / ".lock").exists() and not _litter(out)


def test_a_lock_timeout_gives_up_with_a_named_error(tmp_path, shared_data, capsys):
    src, out = tmp_path / "b.txt", tmp_path / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 10)) + "\n")
    out.mkdir()
    with build_lock(out):
        t = time.monotonic()
        assert build_main(["--prompts", str(src), "--out", str(out), *TORCH, "--lock-timeout", "1"]) == 2
        assert 1 <= time.monotonic() - t < 30
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"is being built by pid {os.getpid()}" in lines[0] and "after 1 s" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [], "nothing written, the holder's lock released"


def test_two_builders_at_once_on_one_folder_both_succeed(tmp_path, shared_data):
    src, out = tmp_path / "b.txt", tmp_path / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 120)) + "\n")
    procs = [_start_build(src, out, tmp_path / f"err{i}.log") for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    logs = [(tmp_path / f"err{i}.log").read_text() for i in range(2)]
    assert sum("already built with these settings" in text for text in logs) == 1, "one built, the other reused it"
    bank = load_bank(out)
    assert len(bank) == 120 and bank.index.ntotal == 120 and not _litter(out)


def test_free_space_is_checked_before_the_large_writes(tmp_path, shared_data, monkeypatch):
    import shutil

    src, out = tmp_path / "b.txt", tmp_path / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 120)) + "\n")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    with pytest.raises(DiskFullError, match=r"values_all\.npy.*needs 180\.0 KB, 97\.7 KB free") as e:
        build_bank(_cfg(src), out, progress=False)
    assert e.value.needed == 120 * 384 * 4
    assert not out.exists(), "a first build that failed before any embedding leaves no folder"


def test_a_file_size_limit_is_one_error_line_not_a_crash(tmp_path, shared_data):
    """A real EFBIG (RLIMIT_FSIZE in the child) on the first memory-mapped array: exit 2, no SIGBUS."""
    src, out = tmp_path / "b.txt", tmp_path / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 120)) + "\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    r = subprocess.run([sys.executable, "-m", "index.build", "--prompts", str(src), "--out", str(out), *TORCH],
                       cwd=REPO, env=ENV, capture_output=True, text=True, preexec_fn=limit, timeout=300, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and "file size limit exceeded" in lines[0] and "values_all.npy" in lines[0]
    assert "needs 180.0 KB" in lines[0]
    assert not out.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs (needs root; skipped elsewhere, as the fault suite's tmpfs runs are)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_disk_that_fills_up_mid_build_is_one_error_line(small_disk, tmp_path, shared_data):
    """Values fit the disk, the embedding shards beside them do not: the shard write is refused by name."""
    src, out = tmp_path / "b.txt", small_disk / "bank"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 150)) + "\n")
    r = subprocess.run([sys.executable, "-m", "index.build", "--prompts", str(src), "--out", str(out), *TORCH,
                        "--shard-size", "64"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _error_lines(r.stderr.replace("\r", "\n"))
    assert len(lines) == 1 and "not enough disk space" in lines[0] and "needs 96.0 KB" in lines[0], lines
    assert r.stderr.count("error:") == 1 and "\nerror:" in r.stderr, "the error starts its own line"
    assert not _litter(out) and not (out / "manifest.json").exists()


def test_strict_utf8_names_the_file_and_line_and_the_default_counts_replacements(tmp_path, shared_data, caplog,
                                                                                  capsys):
    good = _real_prompts(shared_data, 0, 12)
    src, out = tmp_path / "latin1.txt", tmp_path / "bank"
    src.write_bytes(("\n".join(good[:3]) + "\n").encode() + "café crème, oil painting\n".encode("latin-1")
                    + ("\n".join(good[3:]) + "\n").encode() + b"\xff\xfe broken bytes\n")
    with pytest.raises(BankError, match=r"latin1\.txt:4 is not valid UTF-8"):
        build_bank(_cfg(src, strict_utf8=True), out, progress=False)
    assert not out.exists()
    m = build_bank(_cfg(src), out, progress=False, keep_work=True)
    assert m["counts"]["non_utf8_lines"] == 2 and m["sources"][0]["non_utf8_lines"] == 2
    assert any("2 line(s) held bytes that are not UTF-8" in r.message and "line 4" in r.message
               for r in caplog.records)
    assert "caf\ufffd cr\ufffdme, oil painting" in load_bank(out).prompts
    assert build_main(["--prompts", str(src), "--out", str(out), *TORCH, "--shard-size", "32", "--strict-utf8"]) == 2
    assert "--strict-utf8 refuses it" in _error_lines(capsys.readouterr().err)[0]
    (out / "manifest.json").unlink()  # as if the lenient build had been killed after cleaning
    with pytest.raises(BankError, match="2 prompt line.s. are not valid UTF-8.*--strict-utf8 refuses them"):
        build_bank(_cfg(src, strict_utf8=True), out, progress=False)


def _bad_inputs(tmp: Path) -> Path:
    """Damaged prompt files, tune-query files and weights under ``tmp/bad``."""
    bad = tmp / "bad"
    bad.mkdir()
    data = gzip.compress(("a red castle, misty forest\n" * 2000).encode())
    (bad / "truncated.txt.gz").write_bytes(data[: len(data) // 2])
    (bad / "notgzip.txt.gz").write_text("plain text named .gz\n")
    (bad / "crc.txt.gz").write_bytes(data[:-8] + b"\0" * 8)
    (bad / "a_file").write_text("x")
    (bad / "prompts.txt").write_text("a red castle\na misty forest\n")
    np.save(bad / "pickled.npy", np.array([{"x": 1}] * 12, dtype=object))  # np.save pickles object arrays by default
    (bad / "raw_pickle.npy").write_bytes(pickle.dumps({"rows": [1, 2, 3]}))
    (bad / "junk.npy").write_text("not an array\n")
    (bad / "empty.npy").write_bytes(b"")
    np.save(bad / "whole.npy", np.ones((12, 384), np.float32))
    (bad / "truncated.npy").write_bytes((bad / "whole.npy").read_bytes()[:1000])
    np.savez(bad / "archive.npz", q=np.ones((12, 384), np.float32))
    (bad / "junk.pt").write_bytes(b"junk, not a checkpoint")
    with open(bad / "pickle.pt", "wb") as f:
        pickle.dump({"state": os.system}, f)
    return bad


BUILD_CASES = [
    ("truncated .txt.gz", ["--prompts", "{bad}/truncated.txt.gz"], "cannot read prompt file"),
    ("non-gzip .txt.gz", ["--prompts", "{bad}/notgzip.txt.gz"], "cannot read prompt file"),
    ("bad CRC .txt.gz", ["--prompts", "{bad}/crc.txt.gz"], "cannot read prompt file"),
    ("file as --out", ["--prompts", "{bad}/prompts.txt", "--out", "{bad}/a_file"], "is a file, not a folder"),
    ("--out under a file", ["--prompts", "{bad}/prompts.txt", "--out", "{bad}/a_file/bank"], "cannot create --out"),
    ("pickled .npy --tune-queries", ["--tune-queries", "{bad}/pickled.npy"], "Object arrays cannot be loaded"),
    ("raw pickle --tune-queries", ["--tune-queries", "{bad}/raw_pickle.npy"], "is not a .npy file (no NumPy header)"),
    ("junk --tune-queries", ["--tune-queries", "{bad}/junk.npy"], "is not a .npy file (no NumPy header)"),
    ("empty --tune-queries", ["--tune-queries", "{bad}/empty.npy"], "is not a .npy file (no NumPy header)"),
    ("truncated --tune-queries", ["--tune-queries", "{bad}/truncated.npy"], "is not a readable .npy array"),
    (".npz --tune-queries", ["--tune-queries", "{bad}/archive.npz"], "is an .npz archive"),
    ("junk .pt --keys-pretrained", ["--keys", "pb-tiny-clip", "--keys-pretrained", "{bad}/junk.pt"],
     "cannot load CLIP weights file"),
    ("pickled .pt --keys-pretrained", ["--keys", "pb-tiny-clip", "--keys-pretrained", "{bad}/pickle.pt"],
     "cannot load CLIP weights file"),
    ("zero --shard-size", ["--shard-size", "0"], "--shard-size and --batch-size must be at least 1"),
    ("--recall-target above 1", ["--recall-target", "1.5"], "--recall-target must be in (0, 1]"),
]


@pytest.mark.parametrize("kind,args,message", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_bad_build_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, kind, args, message):
    bad = _bad_inputs(tmp_path)
    out = tmp_path / "out"
    argv = [a.format(bad=bad) for a in args]
    argv = (["--prompts", str(bad / "prompts.txt")] if "--prompts" not in argv else []) + argv
    argv += ["--out", str(out)] if "--out" not in argv else []
    before = sorted(p.name for p in bad.rglob("*"))
    assert build_main([*argv, *TORCH]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists() and sorted(p.name for p in bad.rglob("*")) == before


@pytest.fixture(scope="module")
def small_bank(shared_data, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "b.txt"
    src.write_text("\n".join(_real_prompts(shared_data, 0, 20)) + "\n")
    out = tmp_path_factory.mktemp("bank") / "b"
    build_bank(_cfg(src), out, progress=False)
    return out


def _damage(bank: Path, tmp: Path, kind: str) -> Path:
    """A copy of ``bank`` with one part damaged the way ``kind`` says."""
    import shutil

    copy = tmp / "damaged"
    shutil.copytree(bank, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if kind == "manifest not JSON":
        (copy / "manifest.json").write_text("{not json")
    elif kind == "manifest without index":
        del manifest["index"]
        (copy / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "manifest is a list":
        (copy / "manifest.json").write_text("[1, 2]")
    elif kind == "junk index.faiss":
        (copy / "index.faiss").write_bytes(b"junk" * 100)
    elif kind == "truncated index.faiss":
        data = (copy / "index.faiss").read_bytes()
        (copy / "index.faiss").write_bytes(data[: len(data) // 2])
    elif kind == "pickled values.npy":
        np.save(copy / "values.npy", np.array([{"x": 1}] * 20, dtype=object))  # np.save pickles object arrays by default
    elif kind == "1-d values.npy":
        np.save(copy / "values.npy", np.zeros(20, np.float32))
    elif kind == "prompts.txt one line short":
        lines = (copy / PROMPTS_FILE).read_text().splitlines()
        (copy / PROMPTS_FILE).write_text("\n".join(lines[:-1]) + "\n")
    elif kind == "prompts.txt not UTF-8":
        (copy / PROMPTS_FILE).write_bytes(b"\xff\xfe\n" * 20)
    return copy


QUERY_CASES = [
    ("manifest not JSON", "manifest.json is not JSON"),
    ("manifest without index", "lacks index.key"),
    ("manifest is a list", "lacks values.file"),
    ("junk index.faiss", "is not a readable FAISS index"),
    ("truncated index.faiss", "is not a readable FAISS index"),
    ("pickled values.npy", "is incomplete"),
    ("1-d values.npy", "must be 2-d"),
    ("prompts.txt one line short", "has 19 lines for 20 rows"),
    ("prompts.txt not UTF-8", "is not UTF-8 text"),
]


@pytest.mark.parametrize("kind,message", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_query_on_a_damaged_bank_is_one_error_line(small_bank, tmp_path, capsys, kind, message):
    from index.query import main as query_main

    folder = _damage(small_bank, tmp_path, kind)
    assert query_main([str(folder), "a red castle"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


def test_query_with_a_file_as_bank_or_bad_k(small_bank, tmp_path, capsys):
    from index.query import main as query_main

    (tmp_path / "a_file").write_text("x")
    assert query_main([str(tmp_path / "a_file"), "a cat"]) == 2
    assert "prompt bank not found" in _error_lines(capsys.readouterr().err)[0]
    assert query_main([str(small_bank), "a cat", "-k", "0"]) == 2
    assert "-k must be at least 1" in _error_lines(capsys.readouterr().err)[0]
