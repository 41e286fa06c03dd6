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
from promptblend.imagesets import open_image_set
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
    assert load_run(run.path).meta["skipped"][0][0] == bad.stem  # (id, reason)


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


# ---------------------------------------------------------------- image sets as WebDataset shards


@pytest.fixture(scope="module")
def drawn_shards(drawn_images, tmp_path_factory):
    """The drawn images (no prompts) as shards of 2, converted with experiments.sets (original bytes, ids = stems)."""
    from experiments.sets import convert

    root = tmp_path_factory.mktemp("drawn-shards")
    shutil.copytree(drawn_images, root / "images", ignore=shutil.ignore_patterns("*.csv"))
    convert(root / "images", root / "set", shard_size=2)
    return root / "set"


@pytest.mark.parametrize("workers", [0, 2])
def test_predictor_over_shards_equals_over_the_folder(drawn_images, drawn_shards, tmp_path, workers):
    folder = run_predictor("clip-regressor-tiny", drawn_images, tmp_path / "f", batch_size=4, workers=0,
                           shard_size=4, progress=False)
    pattern = str(drawn_shards / "images-{000000..000002}.tar")
    shards = run_predictor("clip-regressor-tiny", pattern, tmp_path / "s", batch_size=4, workers=workers,
                           shard_size=4, progress=False)
    assert shards.ids == folder.ids and shards.path.name == folder.path.name  # same content -> same run key
    np.testing.assert_allclose(shards.embeddings, folder.embeddings, atol=1e-6)


def test_bad_shard_sets_are_named_and_write_no_run(drawn_shards, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "promptblend"))
    from test_shards import _bad_sets

    for what, (source, shard, key) in _bad_sets(tmp_path / "bad").items():
        out = tmp_path / "runs"
        args = ["clip-regressor-tiny", "--images", *map(str, source), "--out", str(out), "--quiet", "--workers", "0"]
        assert main(args) == 2, what
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: shard") and shard in err and (key is None or repr(key) in err), (what, err)
        assert not out.exists() or not any(out.iterdir()), what


def test_resume_over_shards_recomputes_only_missing_shards(drawn_shards, tmp_path, monkeypatch):
    import predictors.run as runner

    out = tmp_path / "runs"
    first = run_predictor("clip-regressor-tiny", drawn_shards, out, shard_size=2, workers=0, progress=False)
    partial = out / f"{first.path.name}.partial"
    partial.mkdir()
    (partial / "ids.txt").write_text("\n".join(first.ids) + "\n")
    np.savez(partial / "rows-000000000-000000002.npz", embeddings=first.embeddings[:2])
    shutil.rmtree(first.path)
    asked = []
    rows = runner.BatchStream.rows
    monkeypatch.setattr(runner.BatchStream, "rows", lambda self, a, b: asked.append((a, b)) or rows(self, a, b))
    resumed = run_predictor("clip-regressor-tiny", drawn_shards, out, shard_size=2, workers=0, progress=False)
    assert asked == [(2, 4), (4, 6)]
    np.testing.assert_allclose(resumed.embeddings, first.embeddings, atol=1e-6)


@pytest.mark.slow
def test_ray_backend_equals_local(drawn_shards, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    from promptblend.executors import DRIVER_HELPS_ENV, open_executor

    monkeypatch.setenv(DRIVER_HELPS_ENV, "0")  # every row and the build error from an actor

    local = run_predictor("clip-regressor-tiny", drawn_shards, tmp_path / "local", shard_size=2, workers=0,
                          progress=False)
    with open_executor("ray"):  # one local Ray (started and stopped by the executor) for both commands
        assert main(["clip-regressor-tiny", "--images", str(drawn_shards), "--out", str(tmp_path / "ray"),
                     "--backend", "ray", "--quiet"]) == 0
        (remote,) = [load_run(p) for p in (tmp_path / "ray").iterdir() if is_run(p)]
        # a model an actor cannot build is the same named error as locally, and no run
        bad = ["captioner-tiny", "--images", str(drawn_shards), "--out", str(tmp_path / "bad"), "--backend", "ray",
               "--config", "model=/nonexistent/blip", "--quiet"]
        assert main(bad) == 2 and not any(is_run(p) for p in (tmp_path / "bad").glob("*"))
        assert capsys.readouterr().err.strip().splitlines()[-1] == "error: caption model path does not exist: /nonexistent/blip"
    assert remote.meta["backend"] == "ray" and remote.meta["actors"] >= 1 and remote.meta["rows_on_driver"] == 0
    assert remote.ids == local.ids and remote.path.name == local.path.name  # same cache key
    np.testing.assert_allclose(remote.embeddings, local.embeddings, atol=1e-6)


@pytest.mark.parametrize("name, kind", [("clip-regressor-tiny", "folder"), ("clip-regressor-tiny", "shards"),
                                        ("captioner-tiny", "folder"), ("clip-interrogator-tiny", "folder")])
def test_dataloader_workers_get_a_light_transform_never_the_model(drawn_images, drawn_shards, tmp_path,
                                                                  monkeypatch, name, kind):
    import pickle

    import torch.utils.data

    real, payloads = torch.utils.data.DataLoader, []

    class Recording(real):  # a subclass, so modules that subclass DataLoader on import still can
        def __init__(self, dataset, *args, **kwargs):
            payloads.append(len(pickle.dumps((dataset, kwargs["collate_fn"]))))
            super().__init__(dataset, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    images = drawn_images if kind == "folder" else drawn_shards
    run_predictor(name, images, tmp_path, workers=1, shard_size=4, progress=False)
    from predictors.registry import create_predictor

    predictor = create_predictor(name)
    predictor.ensure_setup()
    assert payloads and max(payloads) < 100_000 < len(pickle.dumps(predictor)), payloads  # the predictor: MBs
