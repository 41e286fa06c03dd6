"""clip-interrogator: label banks as the package builds them, cached label embeddings, exact chunked
ranking, the three modes; captioner: query handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from predictors.captioner import strip_query
from predictors.interrogator_labels import (
    BANKS,
    LabelBanks,
    PackageLabels,
    load_bank,
    top_k,
)
from predictors.registry import create_predictor
from promptblend.errors import ConfigError


def test_banks_match_the_package_data():
    assert len(load_bank("flavors")) > 100_000 and len(load_bank("mediums")) >= 90
    artists = load_bank("artists", limit=3)
    assert len(artists) == 6 and artists[0].startswith("by ") and artists[3].startswith("inspired by ")
    assert "trending on Artstation" in load_bank("trendings") and len(load_bank("trendings")) == 72
    with pytest.raises(ConfigError):
        load_bank("colours")


def test_top_k_is_exact_across_chunks():
    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(1000, 16)).astype(np.float16)
    feats = torch.from_numpy(rng.normal(size=(3, 16)).astype(np.float32))
    want = np.argsort(-(feats.numpy() @ embeds.astype(np.float32).T), axis=1)[:, :7]
    np.testing.assert_array_equal(top_k(feats, embeds, 7, chunk_size=64), want)


@pytest.fixture(scope="module")
def label_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("labels")


@pytest.fixture(scope="module")
def interrogator(label_cache):
    p = create_predictor("clip-interrogator-tiny", label_limit=50, label_cache=str(label_cache))
    p.ensure_setup()
    return p


def test_short_text_embedding_equals_full_context(interrogator):
    from predictors.interrogator_labels import embed_short_texts
    from promptblend.clip import embed_texts

    texts = ["a cat", "a castle on a hill at dusk, by Greg Rutkowski, trending on Artstation", "x" * 300]
    np.testing.assert_allclose(embed_short_texts(interrogator.clip, texts, 2), embed_texts(interrogator.clip, texts),
                               atol=1e-5)


def test_chain_tokens_equal_the_tokenizer(interrogator):
    from predictors.interrogator import ChainTokenizer
    from predictors.interrogator_labels import load_bank

    tok = interrogator.clip.tokenizer
    phrases = load_bank("flavors", 300) + load_bank("artists", 100) + load_bank("trendings")
    for prefix in ("a cat on a mat", "a 3d render of 42", "café au lait", "a castle, by Greg Rutkowski, " * 4 + "x",
                   "ends with punctuation."):
        want = tok([f"{prefix}, {f}" for f in phrases])
        assert (ChainTokenizer(tok)(prefix, phrases) == want).all(), prefix


def test_label_embeddings_cached_on_disk(interrogator, label_cache):
    files = sorted(label_cache.rglob("*.npy"))
    assert {f.name.split("-")[0] for f in files} >= set(BANKS)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = LabelBanks.build(interrogator.clip, PackageLabels(50), cache=label_cache)
    after = {f: f.stat().st_mtime_ns for f in sorted(label_cache.rglob("*.npy"))}
    assert after == stamps, "the second build reads the cache and writes nothing"
    np.testing.assert_array_equal(again.embeds, interrogator.banks.embeds)


def test_modes(interrogator, drawn_images):
    from promptblend.imagesets import open_image_set

    s = open_image_set(drawn_images)
    clip_pixels, blip_pixels = interrogator.collate([interrogator.preprocess(s.load(i)) for i in range(3)])
    from promptblend.clip import embed_images

    feats = torch.from_numpy(embed_images(interrogator.clip, clip_pixels))
    captions = interrogator.caption_source.model.generate(blip_pixels, max_new_tokens=6, min_new_tokens=2)
    labels = set(interrogator.banks.labels)
    fast = interrogator.fast(feats, captions)
    classic = interrogator.classic(feats, captions)
    chains = interrogator.chain(feats, captions)
    for cap, f, c, ch in zip(captions, fast, classic, chains):
        assert f.startswith(cap) and c.startswith(cap) and ch.startswith(cap)
        assert all(part in labels for part in f[len(cap) + 2:].split(", ") if part)
    # the batched chain equals the chain of each image alone
    assert [interrogator.chain(feats[b:b + 1], captions[b:b + 1])[0] for b in range(3)] == chains
    for mode in ("best", "fast", "classic"):
        interrogator.params["mode"] = mode
        assert len(interrogator.interrogate(feats, captions)) == 3
    with pytest.raises(ConfigError, match="mode"):
        create_predictor("clip-interrogator-tiny", mode="slow")


def test_captioner_query(drawn_images):
    from promptblend.imagesets import open_image_set

    assert strip_query("A picture of a cat", "a picture of") == "a cat"
    assert strip_query("a cat", "What does the image describe?") == "a cat"
    p = create_predictor("captioner-tiny", query="a picture of", max_new_tokens=5)
    s = open_image_set(drawn_images)
    emb = p.predict([s.load(0), s.load(1)])
    assert emb.shape == (2, 384)
    texts = p.caption(p.collate([p.preprocess(s.load(0))]))
    assert texts[0] and not texts[0].lower().startswith("a picture of")


@pytest.mark.slow
def test_new_clip_weights_in_the_same_file_are_a_new_run(drawn_images, tmp_path):
    """Defect: the cache key named the CLIP weights file only. The same command, run as the CLI (a fresh
    process each time), after the file's weights change gives a new run with other prompts."""
    import os
    import subprocess
    import sys

    import open_clip
    from safetensors.torch import save_file

    from promptblend.clip import TINY_CLIP, register_clip_configs
    from promptblend.runs import list_runs, load_run

    register_clip_configs()
    weights, out = tmp_path / "clip.safetensors", tmp_path / "runs"
    command = [sys.executable, "-m", "predictors.run", "clip-interrogator-tiny", "--images", str(drawn_images),
               "--out", str(out), "--workers", "0", "--quiet", "--config", f"clip_pretrained={weights}", "mode=fast",
               "label_limit=30", f"label_cache={tmp_path / 'labels'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    said = []
    for seed in (1, 2, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(TINY_CLIP, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        said.append(done.stdout)
    assert "computed" in said[0] and "computed" in said[1] and "cache hit" in said[2], said
    runs = [load_run(p) for p in list_runs(out)]
    assert len(runs) == 2 and runs[0].prompts != runs[1].prompts
