"""The ClipCap model (mapping transformer + partly frozen GPT-2), its tokenizers and generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from promptblend import atomic
from promptblend.errors import ConfigError, ModelNotFoundError

from ..training import Standardise

EOS = "<|endoftext|>"
TOKENIZER_DIR = "tokenizer"
GPT2_CONFIG_FILE = "gpt2_config.json"
DECODINGS = ("greedy", "beam", "nucleus")
MAPPINGS = ("transformer", "mlp")


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE (GPT-2's scheme) learnt from ``texts``; with no texts, bytes only (257 tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def load_tokenizer(name_or_path: str | Path):
    """A GPT-2 tokenizer by hub name or local folder (offline: local folders only)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"cannot load the GPT-2 tokenizer '{name_or_path}': {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_gpt2(arch: dict[str, Any], tokenizer):
    """GPT-2: the pretrained ``arch['gpt2']`` (name or path) or a random one of the tiny settings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if arch.get("gpt2"):
        try:
            return GPT2LMHeadModel.from_pretrained(str(arch["gpt2"]))
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(f"cannot load GPT-2 '{arch['gpt2']}': {e}") from e
    drop = arch.get("dropout", 0.1)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=arch["n_embd"], n_layer=arch["n_layer"], n_head=arch["n_head"],
        n_positions=arch["n_positions"], bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop, initializer_range=arch.get("initializer_range", 0.02),
    )
    gpt = GPT2LMHeadModel(config)
    if arch.get("embed_std"):
        # GPT-2's trained token embeddings have rows of norm ~3; the frozen, tied random ones of a
        # tiny model need that scale too, or its logits stay nearly flat.
        nn.init.normal_(gpt.transformer.wte.weight, std=arch["embed_std"])
    return gpt


class ClipCapModel(nn.Module):
    """CLIP embedding (standardised) -> ``clip_length`` projected tokens + ``prefix_length`` learnt constants ->
    transformer -> the constants' outputs as GPT-2 prefix embeddings (``mapping="mlp"``: ClipCap's MLP
    straight to the prefix). GPT-2 is frozen but for its last ``trainable_blocks`` blocks and final
    layer norm (``None``: all of it trains)."""

    def __init__(
        self,
        clip_dim: int,
        gpt,
        prefix_length: int = 10,
        clip_length: int = 10,
        mapping_layers: int = 8,
        mapping_heads: int = 8,
        trainable_blocks: int | None = 2,
        dropout: float = 0.1,
        mapping: str = "transformer",
    ) -> None:
        super().__init__()
        if mapping not in MAPPINGS:
            raise ConfigError(f"unknown mapping '{mapping}'; use one of {', '.join(MAPPINGS)}")
        d = gpt.config.n_embd
        self.gpt = gpt
        self.prefix_length, self.clip_length, self.mapping = prefix_length, clip_length, mapping
        self.norm = Standardise(clip_dim)
        if mapping == "mlp":  # ClipCap's MLP mapping: CLIP -> hidden -> tanh -> the prefix itself
            hidden = prefix_length * d // 2
            self.mlp = nn.Sequential(nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, prefix_length * d))
        else:
            self.project = nn.Linear(clip_dim, clip_length * d)
            self.prefix_const = nn.Parameter(torch.randn(prefix_length, d))
            layer = nn.TransformerEncoderLayer(
                d, mapping_heads, dim_feedforward=4 * d, dropout=dropout, activation="gelu", batch_first=True,
                norm_first=True,
            )
            self.mapper = nn.TransformerEncoder(layer, mapping_layers, enable_nested_tensor=False)
        if trainable_blocks is None:  # a random GPT-2 (the tiny preset) has nothing to keep: train all of it
            return
        for p in gpt.parameters():
            p.requires_grad_(False)
        for module in [*gpt.transformer.h[len(gpt.transformer.h) - trainable_blocks :], gpt.transformer.ln_f]:
            for p in module.parameters():
                p.requires_grad_(True)

    def prefix(self, clip_feats: torch.Tensor) -> torch.Tensor:
        """(B, clip_dim) -> (B, prefix_length, n_embd) prefix embeddings."""
        b = clip_feats.shape[0]
        z = self.norm(clip_feats)
        if self.mapping == "mlp":
            return self.mlp(z).view(b, self.prefix_length, -1)
        x = self.project(z).view(b, self.clip_length, -1)
        x = torch.cat([x, self.prefix_const.unsqueeze(0).expand(b, -1, -1)], dim=1)
        return self.mapper(x)[:, self.clip_length :]

    def forward(self, clip_feats: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean NLL of the prompt tokens (``mask`` 1 on real tokens) given the image prefix."""
        prefix = self.prefix(clip_feats)
        embeds = torch.cat([prefix, self.gpt.transformer.wte(tokens)], dim=1)
        ones = torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device)
        labels = torch.cat([torch.full_like(ones, -100, dtype=torch.long), tokens.masked_fill(mask == 0, -100)], dim=1)
        return self.gpt(inputs_embeds=embeds, attention_mask=torch.cat([ones, mask], dim=1), labels=labels).loss


def generate(
    model: ClipCapModel,
    tokenizer,
    clip_feats: torch.Tensor,
    decoding: str = "greedy",
    max_new_tokens: int = 40,
    num_beams: int = 4,
    top_p: float = 0.9,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
) -> list[str]:
    """Prompt text for each CLIP embedding: ``greedy``, ``beam`` (``num_beams``) or ``nucleus`` (``top_p``) decoding;
    ``num_return_sequences`` texts per embedding (consecutive) from beam or nucleus decoding."""
    if decoding not in DECODINGS:
        raise ConfigError(f"unknown decoding '{decoding}'; use one of {', '.join(DECODINGS)}")
    settings: dict[str, Any] = {"do_sample": False, "num_beams": 1}
    if decoding == "beam":
        settings.update(num_beams=num_beams, early_stopping=True)
    elif decoding == "nucleus":
        settings.update(do_sample=True, top_p=top_p, top_k=0, temperature=temperature)
    with torch.no_grad():
        prefix = model.prefix(clip_feats)
        ids = model.gpt.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            num_return_sequences=num_return_sequences,
            **settings,
        )
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def mapping_settings(arch: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ClipCapModel` keyword arguments held in an arch dict."""
    keys = ("prefix_length", "clip_length", "mapping_layers", "mapping_heads", "trainable_blocks", "dropout", "mapping")
    return {k: arch[k] for k in keys if k in arch}


def save_language_side(out: Path, tokenizer, gpt) -> None:
    """Write the tokenizer folder and GPT-2's config into a training folder (atomically)."""
    with atomic.atomic_dir(out / TOKENIZER_DIR) as tmp:
        tokenizer.save_pretrained(str(tmp))
    atomic.write_text(out / GPT2_CONFIG_FILE, json.dumps(gpt.config.to_dict(), indent=1))


def load_trained(folder: Path, arch: dict[str, Any], clip_dim: int) -> tuple[ClipCapModel, Any]:
    """Rebuild a trained folder's (untrained-weight) model and its tokenizer without any hub access."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(folder / TOKENIZER_DIR)
    gpt = GPT2LMHeadModel(GPT2Config.from_dict(json.loads((folder / GPT2_CONFIG_FILE).read_text(encoding="utf-8"))))
    return ClipCapModel(clip_dim, gpt, **mapping_settings(arch)), tokenizer
