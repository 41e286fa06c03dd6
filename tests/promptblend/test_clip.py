"""CLIP loading: a local weights file is served by content, never by path alone."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from promptblend.clip import TINY_CLIP, load_clip


def _save(model, path, scale: float) -> None:
    save_file({k: v.detach().clone() * scale for k, v in model.state_dict().items()}, str(path))


def test_rewritten_weights_file_is_reloaded_in_the_same_process(tmp_path):
    base = load_clip(TINY_CLIP, None, "cpu")
    path = tmp_path / "clip.safetensors"
    _save(base.model, path, 1.0)
    first = load_clip(TINY_CLIP, str(path), "cpu")
    assert load_clip(TINY_CLIP, str(path), "cpu") is first  # unchanged file: memoised
    _save(base.model, path, 0.5)
    second = load_clip(TINY_CLIP, str(path), "cpu")
    assert second is not first
    assert second.identity != first.identity
    w1 = first.model.visual.state_dict()
    w2 = second.model.visual.state_dict()
    name = next(k for k, v in w1.items() if v.float().abs().sum() > 0)
    assert torch.allclose(w2[name], w1[name] * 0.5)
