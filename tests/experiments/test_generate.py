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
from promptblend.imagesets import open_image_set

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


def _finished(folder: Path) -> list[Path]:
    """Finished shards (not the atomic writer's hidden temp files)."""
    return [p for p in sorted(folder.glob("*.tar")) if not p.name.startswith(".")]


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in _finished(folder)}


def _pngs(folder: Path) -> dict[str, bytes]:
    s = open_image_set(folder)
    return {raw.id: raw.data for raw in s.stream(range(len(s)))}


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
    assert meta["images_on_driver"] == 16  # local: this process made every image
    assert s.prompt_list()[0] == s.prompt_list()[1] and "--ar" not in " ".join(s.prompt_list())
    first = _pngs(made)
    assert len(set(first.values())) == 16  # two seeds of one prompt differ
    # one (prompt, seed) gives the same picture whatever batch or set it sits in: prompt 3 alone, batch size 1
    # (bytes are only promised for the same batch size and thread count: see the next test)
    generate_set([s.prompt_list()[4]], tmp_path / "solo",
                 GenerateConfig(**{**TINY.__dict__, "batch_size": 1, "seeds_per_prompt": 2}), progress=False)
    solo = _pngs(tmp_path / "solo")
    _near(solo["000000000"], first["000000004"])
    _near(solo["000000001"], first["000000005"])
    assert not (made / "plan.json").exists()  # a finished set's record is its manifest
    meta = json.loads((made / "manifest.json").read_text())
    assert len(meta["fingerprint"]) == 16 and meta["settings"]["scheduler"] == "dpm++"


def _near(a: bytes, b: bytes) -> None:
    """Two encoded images hold the same picture up to CPU summation order: a level or two on a few pixels."""
    x, y = (np.asarray(Image.open(io.BytesIO(v)), np.int16) for v in (a, b))
    assert x.shape == y.shape and np.abs(x - y).max() <= 2 and (x != y).mean() < 0.02


@pytest.mark.parametrize("threads", [1, 2, 16])
def test_same_bytes_at_one_batch_size_near_pixels_across_batch_sizes(threads):
    """The README's claim, on 1, 2 and 16 threads: a rerun with the same batch size and thread count gives
    the same bytes; batch size 1 vs 4 may move a pixel by a level or two (kernels sum in another order)."""
    import torch

    from experiments.generate import ShardMaker, plan_items

    items = plan_items(["a red cat, oil painting", "a robot, pixel art"], 2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        makers = {bs: ShardMaker(GenerateConfig(**{**TINY.__dict__, "batch_size": bs})) for bs in (1, 4)}
        one, four, again = (m.make(items) for m in (makers[1], makers[4], makers[4]))
    finally:
        torch.set_num_threads(before)
    assert [s["png"] for s in four] == [s["png"] for s in again]
    for a, b in zip(one, four):
        _near(a["png"], b["png"])


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
    while time.time() < deadline and len(_finished(out)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in _finished(out)}
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
    remote = json.loads((out / "manifest.json").read_text())
    # a cluster the caller started: the driver only waits, every image from an actor
    assert remote["backend"] == "ray" and remote["images_on_driver"] == 0
    threads, actor_threads = torch.get_num_threads(), int(local_ray.cluster_resources()["CPU"])
    try:  # Ray's one CPU actor per node runs a torch thread per node CPU: that count locally gives the same bytes
        assert main(_args(prompt_file, tmp_path / "local1", 8, "--threads", str(actor_threads))) == 0
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


def _settings_args(prompt_file: Path, out: Path, *extra: str) -> list[str]:
    """The issue's command on a small scale: DPM-Solver++, render 32 -> store 24 px, lossless WebP, 3 seeds."""
    return ["--prompts", str(prompt_file), "--out", str(out), "--n", "4", "--model", "tiny", "--scheduler", "dpm++",
            "--steps", "2", "--render-size", "32", "--size", "24", "--format", "webp", "--seeds-per-prompt", "3",
            "--shard-size", "6", "--batch-size", "6", "--quiet", *extra]


def test_every_sample_records_its_settings_and_a_different_recipe_is_refused(prompt_file, tmp_path, capsys):
    import tarfile

    out = tmp_path / "webp"
    assert main(_settings_args(prompt_file, out)) == 0
    s = open_image_set(out)
    assert len(s) == 12 and s.counts == [6, 6]
    assert s.load(0).size == (24, 24)  # rendered at 32, stored at 24
    recorded = {"scheduler": "dpm++", "steps": 2, "guidance": 7.5, "render_size": 32, "size": 24, "format": "webp",
                "seeds_per_prompt": 3, "karras": False, "fp16": False, "model": "tiny"}
    seeds = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            assert all(n.endswith((".webp", ".txt", ".json")) for n in names)
            for name in (n for n in names if n.endswith(".json")):
                meta = json.loads(tar.extractfile(name).read())
                assert {k: meta[k] for k in recorded} == recorded
                seeds.append(meta["seed"])
            webp = tar.extractfile(names[[n.endswith(".webp") for n in names].index(True)]).read()
            assert webp[:4] == b"RIFF" and webp[12:16] == b"VP8L"  # lossless WebP
    assert len(set(seeds)) == 12 and all(0 <= x < 2**63 for x in seeds)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["settings"][k] for k in recorded} == recorded and not (out / "plan.json").exists()
    before = _shard_bytes(out)
    # resuming or extending the set with another recipe is refused, naming what differs; nothing changes
    capsys.readouterr()
    assert main(_settings_args(prompt_file, out, "--scheduler", "ddim")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "scheduler 'dpm++' -> 'ddim'" in err
    assert main(_settings_args(prompt_file, out, "--steps", "3")) == 2
    assert _shard_bytes(out) == before and json.loads((out / "manifest.json").read_text()) == manifest
    assert main(_settings_args(prompt_file, out)) == 0  # the same arguments: nothing to make
    again = json.loads((out / "manifest.json").read_text())
    assert again["shards_made"] == 0 and again["images_on_driver"] == 0


def test_seeds_are_63_bit_and_unique_even_for_a_repeated_prompt():
    from experiments.generate import plan_items

    items = plan_items(["a cat", "a dog", "a cat"], 4)
    seeds = [it["seed"] for it in items]
    assert len(set(seeds)) == 12 and max(seeds) >= 2**40 and all(0 <= x < 2**63 for x in seeds)
    assert [it["seed"] for it in plan_items(["a dog"], 4)] == seeds[4:8]  # a prompt's seeds follow its text


def test_every_scheduler_runs_and_karras_is_checked():
    from experiments.generate import SCHEDULERS, ShardMaker, plan_items

    items = plan_items(["a red cat"], 1)
    classes = {}
    for name in SCHEDULERS:
        maker = ShardMaker(GenerateConfig(**{**TINY.__dict__, "scheduler": name, "size": 16}))
        classes[name] = type(maker.pipe.scheduler).__name__
        assert Image.open(io.BytesIO(maker.make(items)[0]["png"])).size == (16, 16)
    assert classes == {"dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler", "default": "DDIMScheduler",
                       "euler-a": "EulerAncestralDiscreteScheduler", "unipc": "UniPCMultistepScheduler"}
    maker = ShardMaker(GenerateConfig(**{**TINY.__dict__, "karras": True, "size": 16}))
    assert maker.pipe.scheduler.config.use_karras_sigmas and maker.pipe.scheduler.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ConfigError, match="--karras is not available"):
        GenerateConfig(model="tiny", scheduler="ddim", karras=True).check()


def test_a_truncated_shard_is_rebuilt_on_resume(made, prompt_file, tmp_path, caplog):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(made, out)
    shard = out / "images-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    (out / "images-000003.tar").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert main(_args(prompt_file, out)) == 0
    assert "images-000002.tar is truncated" in caplog.text
    assert json.loads((out / "manifest.json").read_text())["shards_made"] == 2
    assert _shard_bytes(out) == _shard_bytes(made)


def test_a_failed_start_leaves_nothing_and_a_later_failure_a_resumable_set(prompt_file, tmp_path, capsys,
                                                                          monkeypatch):
    import experiments.generate as gen
    from promptblend.errors import DiskFullError

    out = tmp_path / "failed"
    empty_model = tmp_path / "not-a-model"
    empty_model.mkdir()
    assert main(_args(prompt_file, out, 8, "--model", str(empty_model))) == 2
    assert "nothing to resume" in capsys.readouterr().err and not out.exists()
    real_write, calls = gen.write_shard, []

    def full_on_second(path, samples):
        calls.append(path)
        if len(calls) == 2:
            raise DiskFullError(f"no space left writing {path}", path)
        return real_write(path, samples)

    monkeypatch.setattr(gen, "write_shard", full_on_second)
    assert main(_args(prompt_file, out, 8, "--steps", "3")) == 2  # other arguments than the failed start: fine
    err = capsys.readouterr().err
    assert f"work kept in {out}" in err and "run the same command again to resume" in err
    assert (out / "plan.json").is_file() and not (out / "manifest.json").exists()
    monkeypatch.setattr(gen, "write_shard", real_write)
    assert main(_args(prompt_file, out, 8, "--steps", "3")) == 0
    assert json.loads((out / "manifest.json").read_text())["shards_made"] == 3 and not (out / "plan.json").exists()


def test_dry_run_writes_nothing_and_estimates(prompt_file, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main([a for a in _settings_args(prompt_file, out, "--dry-run") if a != "--quiet"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "12 (4 prompts) in 2 shards" in text and "estimated" in text and "hours" in text and "GiB" in text
    from experiments.generate.dryrun import dry_run

    est = dry_run(["a cat", "a dog"], GenerateConfig(**{**TINY.__dict__, "format": "webp"}))
    assert est["images"] == 2 and est["images_per_s"] > 0 and 100 < est["bytes_per_image"] < 50_000


def test_dedup_leaves_no_pair_at_or_above_the_threshold(prompt_file, tmp_path, capsys):
    from promptblend.text import encode

    chosen, stats = choose_prompts([prompt_file], 20, "random", dedup_cos=0.8)
    cos = encode(chosen) @ encode(chosen).T
    np.fill_diagonal(cos, -1)
    assert len(set(chosen)) == 20 and cos.max() < 0.8
    assert stats["dedup"]["kept"] == 20 and stats["dedup"]["removed"] == stats["dedup"]["looked_at"] - 20
    assert stats["dedup"]["removed"] > 0  # the 96 prompts share subjects and styles: some pairs are near
    with pytest.raises(ConfigError, match="near-duplicates"):
        choose_prompts([prompt_file], 90, dedup_cos=0.5)
    assert main([a for a in _args(prompt_file, tmp_path / "d", 4, "--dedup-cos", "0.8", "--dry-run") if a != "--quiet"]) == 0
    assert "dedup:" in capsys.readouterr().out


def test_cuda_options_are_flags_and_fp16_is_refused_on_cpu(prompt_file, tmp_path, capsys):
    from experiments.generate.__main__ import _parser, config_from

    config = config_from(_parser().parse_args(_args(prompt_file, tmp_path / "x", 2, "--device", "cpu", "--compile",
                                                    "--channels-last", "--no-sdpa")))
    assert config.runtime()["compile"] and config.channels_last and not config.sdpa and config.fp16 is False
    assert main(_args(prompt_file, tmp_path / "x", 2, "--device", "cpu", "--fp16")) == 2
    assert "--fp16 needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "x").exists()
    out = tmp_path / "classic"
    assert main(_args(prompt_file, out, 2, "--device", "cpu", "--no-sdpa", "--channels-last")) == 0
    assert json.loads((out / "manifest.json").read_text())["runtime"]["channels_last"] is True
