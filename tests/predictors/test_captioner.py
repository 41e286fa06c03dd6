"""captioner: the real loading path (a local folder, as from the hub) for BLIP and GIT, with a query; new
weights in a folder are a new run."""

from __future__ import annotations

import numpy as np
import torch

from predictors.blip import tiny_blip
from predictors.captioner import load_caption_model
from predictors.run import run_predictor
from promptblend.runs import list_runs, load_run


def test_blip_folder_equals_the_builtin_tiny(saved_models, drawn_images, tmp_path):
    a = run_predictor("captioner-tiny", drawn_images, tmp_path, workers=0, progress=False)
    b = run_predictor("captioner-tiny", drawn_images, tmp_path, {"model": str(saved_models / "blip")}, workers=0,
                      progress=False)
    assert a.path != b.path and b.prompts == a.prompts
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-5)


def test_git_folder_with_a_query(saved_models, drawn_images):
    from promptblend.imagesets import open_image_set

    model = load_caption_model(str(saved_models / "git"), "cpu")
    assert type(model.model).__name__ == "GitForCausalLM"
    s = open_image_set(drawn_images)
    pixels = torch.stack([model.pixels(s.load(i)) for i in range(2)])
    plain = model.generate(pixels, max_new_tokens=5, min_new_tokens=2)
    asked = model.generate(pixels, query="a picture of", max_new_tokens=5, min_new_tokens=2)
    assert all(plain) and all(asked) and not any(t.startswith("a picture of") for t in asked)


def test_new_weights_in_the_same_folder_are_a_new_run(drawn_images, tmp_path, capsys):
    """Defect: the cache key named the model folder only, so new weights in it served the old run."""
    from predictors.run import main

    folder, out = tmp_path / "blip", tmp_path / "runs"
    command = ["captioner-tiny", "--images", str(drawn_images), "--out", str(out), "--config", f"model={folder}",
               "--workers", "0", "--quiet"]
    for seed in (0, 1):  # the same files, other weights
        model, processor = tiny_blip(seed)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        assert main(command) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert "computed" in first and "computed" in second, second
    runs = [load_run(p) for p in list_runs(out)]
    assert len(runs) == 2 and runs[0].prompts != runs[1].prompts
    assert main(command) == 0 and "cache hit" in capsys.readouterr().out  # unchanged weights: the cached run
