"""End-to-end bank builds on real prompts (MiniLM values on the torch backend, so no ONNX export):
files and manifest, queries, near-dedup, bad banks, CLI errors, kill-and-resume."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.build import BuildConfig, build_bank
from index.build import main as build_main
from index.normalise import normalise_prompt
from index.query import main as query_main
from index.query import query_bank
from promptblend.bank import load_bank
from promptblend.errors import BankError
from promptblend.text import encode

REPO = Path(__file__).resolve().parents[2]


def _real_prompts(shared_data: Path, n: int) -> list[str]:
    with gzip.open(shared_data / "prompt-bank" / "curated-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def prompt_file(shared_data, tmp_path_factory) -> Path:
    lines = _real_prompts(shared_data, 120)
    # add noise the cleaner must remove: duplicates, seeds, flags, blanks
    noisy = lines + ["", "   ", lines[0].upper(), lines[1] + " --ar 16:9", "`" + lines[2] + "` 3551287903"]
    p = tmp_path_factory.mktemp("prompts") / "bank.txt"
    p.write_text("\n".join(noisy) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def bank_dir(prompt_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "b"
    build_bank(BuildConfig(prompts=[str(prompt_file)], values_backend="torch", shard_size=32), out, progress=False)
    return out


def test_bank_files_and_manifest(bank_dir, prompt_file):
    m = json.loads((bank_dir / "manifest.json").read_text())
    lines = prompt_file.read_text().splitlines()
    assert m["counts"]["read"] == len(lines)
    assert m["counts"]["empty"] == 2 and m["counts"]["exact_duplicates"] == 3
    assert m["counts"]["kept"] == 120
    assert m["sources"][0]["path"] == str(prompt_file)
    assert m["values"]["model"]["name"] == "all-MiniLM-L6-v2" and m["keys"]["model"] is None
    assert m["index"]["key"] == "Flat" and m["index"]["recall_at_10"] == 1.0
    assert {"clean_s", "values_s", "index_build_s", "total_s"} <= set(m["times"])
    assert not (bank_dir / ".build").exists(), "work folder removed after success"
    bank = load_bank(bank_dir)
    assert bank.values.shape == (120, 384) and isinstance(bank.values, np.memmap)
    prompts = bank.prompts
    np.testing.assert_allclose(bank.values[:5], encode(prompts[:5]), atol=1e-5)


def test_query_finds_the_prompt_itself(bank_dir, capsys):
    bank = load_bank(bank_dir)
    target = bank.prompts[7]
    hits = query_bank(bank_dir, target, k=3)
    assert hits[0][1] == 7 and hits[0][2] == target and hits[0][0] > 0.999
    assert query_main([str(bank_dir), target, "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and target in out[0]


def test_query_errors(bank_dir, tmp_path, drawbench, capsys):
    image = sorted((drawbench / "images").iterdir())[0]
    assert query_main([str(bank_dir), str(image)]) == 2
    assert "image queries need" in capsys.readouterr().err
    assert query_main([str(tmp_path), "a cat"]) == 2
    assert "not a built bank" in capsys.readouterr().err


def test_rebuild_with_same_settings_is_a_cache_hit(bank_dir, prompt_file):
    before = (bank_dir / "manifest.json").read_text()
    m = build_bank(BuildConfig(prompts=[str(prompt_file)], values_backend="torch", shard_size=32), bank_dir,
                   progress=False)
    assert json.dumps(m, indent=2) == before


def test_work_left_by_a_build_killed_after_its_manifest_is_removed(bank_dir, prompt_file):
    work = bank_dir / ".build" / "shards"
    work.mkdir(parents=True)
    (work / "left.npy").write_bytes(b"x")  # what a kill between publishing and cleanup leaves
    build_bank(BuildConfig(prompts=[str(prompt_file)], values_backend="torch", shard_size=32), bank_dir, progress=False)
    assert not (bank_dir / ".build").exists()


def test_near_dedup_drops_paraphrases(tmp_path, shared_data):
    base = _real_prompts(shared_data, 30)
    p = tmp_path / "b.jsonl"
    rows = base + [t + " ." for t in base[:10]]  # near-identical after embedding, not exact duplicates
    p.write_text("\n".join(json.dumps({"prompt": t}) for t in rows))
    m = build_bank(BuildConfig(prompts=[str(p)], dedup_cos=0.97, values_backend="torch"), tmp_path / "b",
                   progress=False)
    assert m["counts"]["unique"] == 40 and m["counts"]["near_duplicates"] >= 8
    bank = load_bank(tmp_path / "b")
    assert len(bank) == m["counts"]["kept"] and bank.prompts[:5] == [normalise_prompt(t) for t in base[:5]]
    v = np.asarray(bank.values)
    sims = v @ v.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.97


@pytest.mark.parametrize("content", ["", "\n \n``\n1234567890\n", "same prompt\nSAME PROMPT\nsame prompt --seed 4\n"])
def test_empty_or_all_duplicate_bank_is_a_clear_error(tmp_path, content, capsys):
    p = tmp_path / "b.txt"
    p.write_text(content)
    with pytest.raises(BankError, match="distinct prompt"):
        build_bank(BuildConfig(prompts=[str(p)], values_backend="torch"), tmp_path / "b", progress=False)
    assert build_main(["--prompts", str(p), "--out", str(tmp_path / "c"), "--values-backend", "torch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "distinct prompt" in err[0]


def test_cli_bad_inputs(tmp_path, capsys):
    assert build_main(["--prompts", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "b.xlsx").write_text("x")
    assert build_main(["--prompts", str(tmp_path / "b.xlsx"), "--out", str(tmp_path / "o")]) == 2
    assert "unsupported" in capsys.readouterr().err
    (tmp_path / "b.txt").write_text("a\nb\n")
    assert build_main(["--prompts", str(tmp_path / "b.txt"), "--out", str(tmp_path / "o"), "--budget-gb", "0"]) == 2
    r = subprocess.run([sys.executable, "-m", "index.build", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "--dedup-cos" in r.stdout and "--backend" in r.stdout


def test_killed_build_resumes_where_it_stopped(tmp_path, shared_data):
    """SIGKILL a CLI build after a few shards, then resume: finished shards are reused, result exact."""
    prompts = _real_prompts(shared_data, 280)[200:]
    src = tmp_path / "b.txt"
    src.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "bank"
    args = ["--prompts", str(src), "--out", str(out), "--shard-size", "8", "--batch-size", "8",
            "--values-backend", "torch"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "index.build", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / ".build" / "shards"

    def finished_shards() -> int:  # not the hidden temp file of the shard being written
        return sum(not p.name.startswith(".") for p in shards.glob("*.npy"))

    deadline = time.time() + 240
    while time.time() < deadline and finished_shards() < 3 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = finished_shards()
    assert 3 <= done_before < 10, "killed mid-way"
    assert not (out / "manifest.json").exists()

    cfg = BuildConfig(prompts=[str(src)], values_backend="torch", shard_size=8, batch_size=8)
    m = build_bank(cfg, out, progress=False)
    stats = m["embedding"]["values"]
    assert stats["shards_reused"] >= done_before and stats["shards_reused"] + stats["shards_computed"] == 10
    bank = load_bank(out)
    expected = [normalise_prompt(t) for t in prompts]
    assert bank.prompts == expected
    np.testing.assert_allclose(bank.values, encode(expected), atol=1e-5)


def test_auto_values_backend_is_torch_on_a_gpu_else_onnx(monkeypatch):
    import torch

    from index.build import resolve_values_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_values_backend("auto") == "onnx"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_values_backend("auto") == "torch"
    assert resolve_values_backend("onnx") == "onnx"


def test_tune_queries_are_checked_before_embedding_and_recorded(tmp_path, prompt_file, capsys):
    out = tmp_path / "b"
    bad = tmp_path / "bad.npy"
    for array, message in [(np.zeros((20, 512), np.float32), "384 columns"),
                           (np.full((20, 384), np.nan, np.float32), "NaN"),
                           (np.zeros((3, 384), np.float32), "at least 10")]:
        np.save(bad, array)
        assert build_main(["--prompts", str(prompt_file), "--out", str(out), "--tune-queries", str(bad)]) == 2
        assert message in capsys.readouterr().err
        assert not (out / ".build").exists(), "refused before any work"
    good = tmp_path / "q.npy"
    np.save(good, encode(["a photo of a cat", "portrait of a woman, oil painting"] * 8))
    m = build_bank(BuildConfig(prompts=[str(prompt_file)], values_backend="torch", shard_size=32,
                               tune_queries=str(good)), out, progress=False)
    assert m["index"]["tuning"]["query_source"] == str(good) and m["index"]["recall_at_10"] == 1.0
