"""The runner: config parsing, bad input (named errors, never a finished run), CLI, resume, external alignment."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from predictors.run import main, parse_config, run_predictor
from promptblend.errors import (
    AlignmentError,
    BadImageError,
    ConfigError,
    ModelNotFoundError,
)
from promptblend.images import open_image_set
from promptblend.runs import is_run, load_run
from promptblend.submission import write_submission
from promptblend.vectors import l2_normalise


def test_parse_config_types_from_defaults(tmp_path):
    cfg = parse_config("clip-interrogator-tiny", ["max_flavors=7", "mode=fast", "label_limit=50", "label_cache=/x"])
    assert cfg == {"max_flavors": 7, "mode": "fast", "label_limit": 50, "label_cache": "/x"}
    (tmp_path / "c.json").write_text(json.dumps({"params": {"num_beams": 2}}))
    assert parse_config("captioner-tiny", [str(tmp_path / "c.json"), "query=a picture of"]) == {
        "num_beams": 2, "query": "a picture of"}
    with pytest.raises(ConfigError, match="no config key.*nope"):
        parse_config("captioner-tiny", ["nope=1"])
    with pytest.raises(ConfigError, match="num_beams"):
        parse_config("captioner-tiny", ["num_beams=two"])
    with pytest.raises(ConfigError, match="neither key=value nor"):
        parse_config("captioner-tiny", ["missing.json"])
    with pytest.raises(ConfigError, match="unknown predictor"):
        parse_config("no-such-predictor", [])


def test_unknown_key_and_missing_model_leave_nothing(mixed_images, tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match="nope"):
        run_predictor("captioner-tiny", mixed_images, out, {"nope": 1}, progress=False)
    with pytest.raises(ModelNotFoundError, match="does not exist: /nonexistent/blip"):
        run_predictor("captioner-tiny", mixed_images, out, {"model": "/nonexistent/blip"}, progress=False)
    with pytest.raises(ModelNotFoundError, match="not found"):
        run_predictor("clip-interrogator-tiny", mixed_images, out, {"clip_pretrained": "/nope/w.safetensors"},
                      progress=False)
    # a hub id that cannot be resolved offline (the tests run with HF_HUB_OFFLINE=1)
    with pytest.raises(ModelNotFoundError, match="offline or missing"):
        run_predictor("captioner", mixed_images, out, progress=False)
    assert not out.exists() or not any(out.iterdir()), "no run and no shards after a config/model error"


def test_corrupt_image_mid_set(mixed_images, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(mixed_images, images)
    bad = sorted(images.iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated file
    out = tmp_path / "runs"
    with pytest.raises(BadImageError, match=bad.name):
        run_predictor("captioner-tiny", images, out, batch_size=1, workers=1, shard_size=2, progress=False)
    assert not [p for p in out.iterdir() if is_run(p)], "no finished run after a bad image"
    (partial,) = out.glob("*.partial")
    assert sorted(f.name for f in partial.glob("rows-*.npz")) == ["rows-000000000-000000002.npz"]  # kept for resume

    # the CLI says so in one line, exit 2
    assert main(["captioner-tiny", "--images", str(images), "--out", str(tmp_path / "cli"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: bad image") and bad.name in err[-1]

    # --skip-bad drops it and records it
    run = run_predictor("captioner-tiny", images, out, skip_bad=True, workers=0, progress=False)
    assert len(run) == 5 and bad.stem not in run.ids
    assert load_run(run.path).meta["skipped"][0][0].endswith(bad.name)


def test_resume_recomputes_only_missing_shards(mixed_images, tmp_path):
    out = tmp_path / "runs"
    first = run_predictor("clip-interrogator-tiny", mixed_images, out, shard_size=2, workers=0, progress=False)
    # simulate a kill after two shards: move the run back to a partial folder without its last shard
    partial = out / f"{first.path.name}.partial"
    partial.mkdir()
    (partial / "ids.txt").write_text("\n".join(first.ids) + "\n")
    for n in range(2):
        np.savez(partial / f"rows-{2 * n:09d}-{2 * n + 2:09d}.npz", embeddings=first.embeddings[2 * n: 2 * n + 2] * 0 + 1 / np.sqrt(384),
                 prompts=np.asarray(first.prompts[2 * n: 2 * n + 2]))
    shutil.rmtree(first.path)
    resumed = run_predictor("clip-interrogator-tiny", mixed_images, out, shard_size=2, workers=0, progress=False)
    # rows of the kept shards come from disk (the marker value), the rest are recomputed
    np.testing.assert_allclose(resumed.embeddings[:4], 1 / np.sqrt(384), atol=1e-7)
    np.testing.assert_allclose(resumed.embeddings[4:], first.embeddings[4:], atol=1e-5)
    assert resumed.prompts[4:] == first.prompts[4:]


def test_external_alignment(mixed_images, tmp_path):
    ids = open_image_set(mixed_images).ids
    emb = l2_normalise(np.random.default_rng(1).normal(size=(len(ids) - 1, 384)))
    write_submission(tmp_path / "short.csv", ids[1:], emb)
    with pytest.raises(AlignmentError, match=r"1 image ids missing \(e.g. \['" + ids[0]):
        run_predictor("external", mixed_images, tmp_path / "runs", {"source": str(tmp_path / "short.csv")},
                      progress=False)
    assert not any(is_run(p) for p in (tmp_path / "runs").glob("*"))
    with pytest.raises(ConfigError, match="source="):
        run_predictor("external", mixed_images, tmp_path / "runs", progress=False)
    # a changed source file is a new run, not a stale cache hit
    full = l2_normalise(np.random.default_rng(2).normal(size=(len(ids), 384)))
    write_submission(tmp_path / "full.csv", ids, full)
    a = run_predictor("external", mixed_images, tmp_path / "runs", {"source": str(tmp_path / "full.csv")}, progress=False)
    write_submission(tmp_path / "full.csv", ids, full[::-1].copy())
    b = run_predictor("external", mixed_images, tmp_path / "runs", {"source": str(tmp_path / "full.csv")}, progress=False)
    assert a.path != b.path and not b.meta.get("cache_hit")
    np.testing.assert_allclose(b.embeddings, full[::-1], atol=1e-6)


def test_cli_help_and_cache_hit(mixed_images, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--images" in capsys.readouterr().out
    args = ["captioner-tiny", "--images", str(mixed_images), "--out", str(tmp_path), "--quiet", "--workers", "0",
            "--config", "max_new_tokens=6"]
    assert main(args) == 0 and "computed" in capsys.readouterr().out
    assert main(args) == 0 and "cache hit" in capsys.readouterr().out
    assert main(args + ["bogus=1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: predictor 'captioner-tiny' has no config key(s) bogus")
