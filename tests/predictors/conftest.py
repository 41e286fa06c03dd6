"""Predictor test fixtures: a few real images, drawn images (no ../shared needed), one torch thread
(the test machine's cores are shared)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Two intra-op threads on two busy shared cores run ~10x slower than one; tests use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mixed_images(tmp_path_factory, drawbench, kaggle_sample) -> Path:
    """4 drawbench JPEGs + 2 Kaggle PNGs in one folder (a session-wide read-only copy)."""
    dst = tmp_path_factory.mktemp("mixed") / "images"
    dst.mkdir()
    for src, n in ((drawbench / "images", 4), (kaggle_sample / "images", 2)):
        for p in sorted(src.iterdir())[:n]:
            shutil.copy(p, dst / p.name)
    return dst


@pytest.fixture(scope="session")
def drawn_images(tmp_path_factory) -> Path:
    """6 drawn shapes (:mod:`shapes`): 4 PNGs of 64 px and 2 JPEGs of 80 px, with ``prompts.csv``."""
    from PIL import Image
    from shapes import make_shapes

    folder = make_shapes(tmp_path_factory.mktemp("drawn") / "images", 4, size=64)
    for i, p in enumerate(sorted(make_shapes(folder.parent / "jpeg", 2, size=80, seed=1).glob("*.png"))):
        Image.open(p).save(folder / f"photo{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> Path:
    """The tiny BLIP and a tiny GIT saved as transformers folders (``blip/``, ``git/``), as from the hub."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        GitConfig,
        GitForCausalLM,
        GitProcessor,
    )

    from predictors.blip import tiny_blip
    from promptblend.text import scoring_model_path

    root = tmp_path_factory.mktemp("caption-models")
    model, processor = tiny_blip(0)
    model.save_pretrained(root / "blip")
    processor.save_pretrained(root / "blip")
    # GIT's own tokenizer is BERT's without token type ids
    tok = AutoTokenizer.from_pretrained(str(scoring_model_path()), model_input_names=["input_ids", "attention_mask"])
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = GitConfig(vision_config=dict(small, image_size=64, patch_size=16), vocab_size=len(tok),
                       max_position_embeddings=128, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                       pad_token_id=tok.pad_token_id, **small)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        git = GitForCausalLM(config)
    git.save_pretrained(root / "git")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    GitProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(root / "git")
    return root
