"""A tiny random Stable Diffusion twin (same classes, small configs) that runs offline on CPU.

Weights are seeded, so every process builds identical ones; the CLIP tokenizer's ``vocab.json`` and
``merges.txt`` are derived from open_clip's BPE merges file (DESIGN section 8).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from promptblend import atomic
from promptblend.cache import cache_dir

#: What ``--model tiny`` names.
TINY = "tiny"
#: Pixels per side the tiny twin is meant for (its UNet's ``sample_size`` times the VAE's factor 2).
TINY_SIZE = 64
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # open_clip's merges[1:49152-256-2+1]


def tokenizer_files(folder: str | Path | None = None) -> Path:
    """Write (once) and return a folder with ``vocab.json`` and ``merges.txt`` derived from open_clip's BPE."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    folder = Path(folder) if folder is not None else cache_dir() / "sd-tiny-tokenizer"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    with gzip.open(default_bpe()) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    atomic.write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    atomic.write_text(folder / "vocab.json", json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    return folder


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """Seeded small UNet, VAE, 2-layer CLIP text model, tokenizer and DDIM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=TINY_SIZE // 2, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=32,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=VOCAB_SIZE - 2,
            eos_token_id=VOCAB_SIZE - 1, pad_token_id=VOCAB_SIZE - 1,
        ))
    folder = tokenizer_files()
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
