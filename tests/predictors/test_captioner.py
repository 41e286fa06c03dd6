"""captioner: the real loading path (a local folder, as from the hub) for BLIP and GIT, with a query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from predictors.blip import tiny_blip, tiny_blip_processor
from predictors.captioner import load_caption_model
from predictors.run import run_predictor


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """The tiny BLIP and a tiny GIT saved as transformers folders."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    root = tmp_path_factory.mktemp("caption-models")
    model, processor = tiny_blip(0)
    model.save_pretrained(root / "blip")
    processor.save_pretrained(root / "blip")
    tok = tiny_blip_processor().tokenizer
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
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


def test_blip_folder_equals_the_builtin_tiny(saved_models, mixed_images, tmp_path):
    a = run_predictor("captioner-tiny", mixed_images, tmp_path, workers=0, progress=False)
    b = run_predictor("captioner-tiny", mixed_images, tmp_path, {"model": str(saved_models / "blip")}, workers=0,
                      progress=False)
    assert a.path != b.path and b.prompts == a.prompts
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-5)


def test_git_folder_with_a_query(saved_models, mixed_images):
    from promptblend.images import open_image_set

    model = load_caption_model(str(saved_models / "git"), "cpu")
    assert type(model.model).__name__ == "GitForCausalLM"
    s = open_image_set(mixed_images)
    pixels = torch.stack([model.pixels(s.load(i)) for i in range(2)])
    plain = model.generate(pixels, max_new_tokens=5, min_new_tokens=2)
    asked = model.generate(pixels, query="a picture of", max_new_tokens=5, min_new_tokens=2)
    assert all(plain) and all(asked) and not any(t.startswith("a picture of") for t in asked)
