"""experiments.generate with the tiny Stable Diffusion twin: reproducible shards, resume after SIGKILL,
Ray equals local, --exclude checked by brute force, and bad input refused before any work."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.generate import (
    GenerateConfig,
    choose_prompts,
    generate_set,
)
from experiments.generate.__main__ import main
from experiments.generate.prompts import sample_rows
from promptblend.errors import ConfigError, ModelNotFoundError, TruthError
from promptblend.images import open_image_set

ROOT = Path(__file__).resolve().parents[2]
TINY = GenerateConfig(model="tiny", steps=2, size=32, shard_size=16, batch_size=8)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    """96 distinct made-up prompts, a few with junk that index.build's normaliser strips."""
    subjects = ["a cat", "a red car", "an old castle", "a bowl of fruit", "a robot", "a forest lake"]
    styles = ["oil painting", "pixel art", "photo, 35mm", "watercolor", "3d render", "pencil sketch",
              "in the style of ukiyo-e", "cyberpunk neon", "low poly", "studio ghibli", "vaporwave", "baroque",
              "claymation", "isometric", "infrared photo", "stained glass"]
    lines = [f"{s}, {t}" for s in subjects for t in styles]
    lines[0] += " --ar 16:9"
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _pngs(folder: Path) -> dict[str, bytes]:
    s = open_image_set(folder)
    return {id_: data for _, id_, _, data, _ in s.raw(split_workers=False)}


def _args(prompt_file: Path, out: Path, n: int = 8, *extra: str) -> list[str]:
    """CLI arguments for ``n`` prompts x 2 seeds of the tiny twin in shards of 4 images."""
    return ["--prompts", str(prompt_file), "--out", str(out), "--n", str(n), "--model", "tiny", "--seeds-per-prompt",
            "2", "--steps", "2", "--size", "32", "--shard-size", "4", "--batch-size", "4", "--quiet", *extra]


@pytest.fixture(scope="module")
def made(prompt_file, tmp_path_factory) -> Path:
    """A 16-image set (8 prompts x 2 seeds) in 4 shards, from the CLI."""
    out = tmp_path_factory.mktemp("gen") / "set"
    assert main(_args(prompt_file, out)) == 0
    return out


def test_tiny_set_is_a_valid_image_set(made, tmp_path):
    s = open_image_set(made)
    assert len(s) == 16 and s.counts == [4] * 4 and s.ids[0] == "000000000"
    meta = json.loads((made / "manifest.json").read_text())
    assert meta["n_images"] == 16 and meta["shards_made"] == 4 and meta["settings"]["model"] == "tiny"
    assert s.prompt_list()[0] == s.prompt_list()[1] and "--ar" not in " ".join(s.prompt_list())
    first = _pngs(made)
    assert len(set(first.values())) == 16  # two seeds of one prompt differ
    # one (prompt, seed) gives the same image whatever batch or set it sits in: prompt 3 alone, batch size 1
    generate_set([s.prompt_list()[4]], tmp_path / "solo",
                 GenerateConfig(**{**TINY.__dict__, "batch_size": 1, "seeds_per_prompt": 2}), progress=False)
    solo = _pngs(tmp_path / "solo")
    assert [solo["000000000"], solo["000000001"]] == [first["000000004"], first["000000005"]]


@pytest.mark.slow
def test_a_64_image_set_twice_gives_identical_png_bytes(prompt_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_args(prompt_file, a, 32)) == 0 and main(_args(prompt_file, b, 32)) == 0
    assert len(_pngs(a)) == 64 and _pngs(a) == _pngs(b)
    assert _shard_bytes(a) == _shard_bytes(b)  # fixed tar mtimes: whole shards are identical too


def test_sigkill_then_resume_redoes_only_unfinished_shards(made, prompt_file, tmp_path):
    out = tmp_path / "killed"
    args = _args(prompt_file, out)
    proc = subprocess.Popen([sys.executable, "-m", "experiments.generate", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.tar"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert 2 <= len(done) < 4 and not (out / "manifest.json").exists()
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards_made"] == 4 - len(done)
    assert all((out / n).stat().st_mtime_ns == t for n, t in done.items())  # finished shards untouched
    assert _shard_bytes(out) == _shard_bytes(made)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_ray_backend_equals_local(made, prompt_file, tmp_path, local_ray):
    import torch

    out = tmp_path / "ray"
    assert main(_args(prompt_file, out, 8, "--backend", "ray")) == 0
    assert json.loads((out / "manifest.json").read_text())["backend"] == "ray"
    threads = torch.get_num_threads()
    try:  # Ray's CPU actors run one torch thread: the same count locally gives the same bytes
        assert main(_args(prompt_file, tmp_path / "local1", 8, "--threads", "1")) == 0
    finally:
        torch.set_num_threads(threads)
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "local1")
    # another thread count moves a few pixels by at most one level (CPU float summation order)
    remote = _pngs(out)
    for key, png in _pngs(made).items():
        a, b = (np.asarray(Image.open(io.BytesIO(x)), np.int16) for x in (png, remote[key]))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_exclude_leaves_nothing_at_or_above_the_threshold(prompt_file, tmp_path):
    from promptblend.text import encode

    held = tmp_path / "held.csv"
    lines = prompt_file.read_text().splitlines()
    held.write_text("imgId,prompt\n" + "".join(f"h{i},\"{p}\"\n" for i, p in enumerate(lines[::7])))
    threshold = 0.75
    chosen, stats = choose_prompts([prompt_file], 20, "random", [held], threshold)
    held_prompts = lines[::7]
    cos = encode(chosen) @ encode(held_prompts).T  # brute force, every pair
    assert len(chosen) == 20 and cos.max() < threshold
    ex = stats["exclude"]
    assert ex["removed"] >= len(held_prompts) and ex["max_cos_kept"] == pytest.approx(ex["max_cos_kept"])
    assert ex["max_cos_kept"] < threshold and ex["max_cos_kept"] >= cos.max() - 1e-5
    clustered, _ = choose_prompts([prompt_file], 12, "clusters", [held], threshold)
    assert len(set(clustered)) == 12 and encode(clustered).dot(encode(held_prompts).T).max() < threshold


def test_bank_values_are_used_without_re_embedding_and_clusters_cover_them(prompt_file, tmp_path, monkeypatch):
    import promptblend.text
    from index.build import BuildConfig, build_bank
    from promptblend.bank import load_bank

    build_bank(BuildConfig(prompts=[str(prompt_file)], values_backend="torch"), tmp_path / "bank", progress=False)
    bank = load_bank(tmp_path / "bank")

    def refuse(*a, **k):
        raise AssertionError("a bank's prompts must not be re-embedded")

    monkeypatch.setattr(promptblend.text, "encode", refuse)
    chosen, stats = choose_prompts([tmp_path / "bank"], 6, "clusters")
    assert stats["source"]["bank"] == str(tmp_path / "bank") and set(chosen) <= set(bank.prompts)
    # k-means strata cover the bank: 6 prompts drawn over 6 clusters span (nearly) all 6 subjects, random ones rarely
    values = np.asarray(bank.values, np.float32)

    def subjects(how: str, seed: int) -> int:
        return len({bank.prompts[i].split(",")[0] for i in sample_rows(values, 6, how, seed)})

    clustered, uniform = [subjects("clusters", s) for s in range(5)], [subjects("random", s) for s in range(5)]
    assert min(clustered) >= 5 and np.mean(clustered) > np.mean(uniform), (clustered, uniform)


def test_bad_input_is_refused_before_any_work(prompt_file, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(ModelNotFoundError, match="model path not found"):
        generate_set(["a cat"], out, GenerateConfig(model=str(tmp_path / "no-model")))
    assert main(["--prompts", str(prompt_file), "--out", str(out), "--n", "2", "--model", "./no/such/model"]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ConfigError, match="no prompt left"):
        choose_prompts([prompt_file], 2, exclude=[prompt_file], exclude_cos=-1.0)
    with pytest.raises(ConfigError, match="more than the 96 prompts"):
        choose_prompts([prompt_file], 97)
    empty = tmp_path / "empty.csv"
    empty.write_text("imgId,prompt\n")
    with pytest.raises(TruthError, match="holds no prompts"):
        choose_prompts([prompt_file], 2, exclude=[empty])
    assert not out.exists()


def test_generated_set_converts_to_a_folder_and_back(made, tmp_path):
    from experiments.sets import convert

    folder = tmp_path / "folder"
    assert convert(made, folder)["n_images"] == 16
    assert sorted(p.name for p in folder.iterdir())[:2] == ["000000000.png", "000000001.png"]
    back = tmp_path / "back"
    assert convert(folder, back, shard_size=6)["shards"] == 3
    assert _pngs(back) == _pngs(made) and open_image_set(back).prompts == open_image_set(made).prompts
    assert open_image_set(folder).fingerprint() == open_image_set(made).fingerprint()


def test_parquet_of_paths_or_bytes_converts_to_shards(made, tmp_path):
    import pandas as pd

    from experiments.sets import convert

    pngs, prompts = _pngs(made), open_image_set(made).prompts
    (tmp_path / "img").mkdir()
    for k, data in list(pngs.items())[:5]:
        (tmp_path / "img" / f"{k}.png").write_bytes(data)
    keys = list(pngs)[:5]
    pd.DataFrame({"image_name": [f"{k}.png" for k in keys], "path": [f"img/{k}.png" for k in keys],
                  "prompt": [prompts[k] for k in keys]}).to_parquet(tmp_path / "paths.parquet")
    pd.DataFrame({"image_name": keys, "image": [pngs[k] for k in keys],
                  "prompt": [prompts[k] for k in keys]}).to_parquet(tmp_path / "bytes.parquet")
    for name in ("paths", "bytes"):
        convert(tmp_path / f"{name}.parquet", tmp_path / name)
        s = open_image_set(tmp_path / name)
        assert s.ids == keys and _pngs(tmp_path / name) == {k: pngs[k] for k in keys}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
