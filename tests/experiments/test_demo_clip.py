"""Contrastive training of the demo's tiny CLIP: it learns, saves a loadable file, and is reused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.demo.clip_train import (
    ClipTrainConfig,
    encode_text_trimmed,
    image_tensor,
    train_demo_clip,
)
from experiments.demo.data import DataConfig, make_demo_data
from promptblend.clip import TINY_CLIP, embed_images, embed_texts, load_clip

CONFIG = ClipTrainConfig(epochs=20, batch_size=32, lr=3e-3, warmup_steps=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster than two on a busy machine
    root = tmp_path_factory.mktemp("clip")
    data = make_demo_data(root, DataConfig(n_pairs=300, n_bank=0), progress=False)
    yield data, train_demo_clip(data, root / "ckpt", CONFIG, progress=False)
    torch.set_num_threads(threads)


def test_training_lowers_the_loss(trained):
    _, ckpt = trained
    m = ckpt.metrics
    assert m["steps"] == CONFIG.epochs * (m["train_pairs"] // CONFIG.batch_size)
    chance = math.log(CONFIG.batch_size)  # the contrastive loss of embeddings that match nothing
    assert m["first_epoch_loss"] > 0.9 * chance
    assert m["final_loss"] < 0.7 * chance
    assert 0 <= m["val_retrieval"]["top1"] <= m["val_retrieval"]["top5"] <= 1


def test_checkpoint_loads_with_load_clip(trained):
    data, ckpt = trained
    assert ckpt.path.suffix == ".safetensors" and ckpt.clip == (TINY_CLIP, str(ckpt.path))
    bundle = load_clip(*ckpt.clip, device="cpu")
    prompts = data.prompts("val")[:8]
    keys = embed_texts(bundle, prompts)
    assert keys.shape == (8, bundle.embed_dim)
    with torch.inference_mode():
        trimmed = encode_text_trimmed(bundle.model, bundle.tokenizer(prompts))
    np.testing.assert_allclose(keys, torch.nn.functional.normalize(trimmed, dim=-1).numpy(), atol=1e-5)
    # the folder's PNGs through open_clip's own preprocessing match the cached pixel tensors
    from promptblend.imagesets import open_image_set

    images = open_image_set(data.images("val"))
    via_png = torch.stack([bundle.preprocess(images.load(i)) for i in range(4)])
    pre = bundle.model.visual.preprocess_cfg
    np.testing.assert_allclose(
        embed_images(bundle, via_png), embed_images(bundle, image_tensor(data.pixels("val")[:4], pre["mean"], pre["std"])),
        atol=1e-4,
    )


def test_second_call_reuses_the_checkpoint(trained):
    data, ckpt = trained
    stamp = ckpt.path.stat().st_mtime_ns
    again = train_demo_clip(data, ckpt.path.parent, CONFIG, progress=False)
    assert again.path == ckpt.path and again.path.stat().st_mtime_ns == stamp
    assert again.metrics == ckpt.metrics
