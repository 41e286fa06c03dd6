"""The tiny random OFA twin (``pb-tiny-ofa``): a real checkpoint folder built offline, once, in the cache.

Its tokenizer is a byte-level BPE in BART's layout (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, words,
``<mask>`` last) learnt from the clip-interrogator package's label banks; the model is 2 + 2 layers of
width 32 on OFA's smallest ResNet, seeded, with cross-attention scaled up and self-attention down so that
captions differ between images, and the code/bin rows shrunk so that captions are mostly words. It loads
through the same path as any OFA-Sys folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from promptblend import atomic
from promptblend.cache import cache_dir

#: What the ``model`` setting names to get the tiny twin.
TINY_OFA = "pb-tiny-ofa"
#: Bump when the twin's recipe changes (a new cache folder).
VERSION = 1
BPE_VOCAB = 1000
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
TINY_CONFIG = dict(
    d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=64, resnet_type="resnet18", patch_image_size=64, init_std=0.2,
)
#: Weight gains of the decoder's cross-attention and self-attention matrices, and of the code/bin embeddings.
CROSS_GAIN, SELF_GAIN, EXTRA_GAIN = 10.0, 0.3, 0.1


def write_tokenizer(folder: Path, vocab_size: int = BPE_VOCAB) -> int:
    """Learn the twin's BPE and write ``vocab.json`` + ``merges.txt`` into ``folder``; return the vocab size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from predictors.interrogator_labels import load_bank

    texts = [t for bank in ("flavors", "mediums", "movements") for t in load_bank(bank)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return len(vocab)


def tiny_checkpoint(seed: int = 0) -> Path:
    """The twin's checkpoint folder (built on first use: ``config.json``, tokenizer files, ``model.safetensors``)."""
    folder = cache_dir() / f"ofa-tiny-v{VERSION}-seed{seed}"
    if all((folder / f).is_file() for f in ("config.json", "vocab.json", "merges.txt", "model.safetensors")):
        return folder
    import torch
    from safetensors.torch import save_file

    from .config import EXTRA_TOKENS, OFAConfig
    from .model import OFAModel

    with atomic.atomic_dir(folder) as tmp:
        words = write_tokenizer(tmp)
        config = OFAConfig(vocab_size=words + len(EXTRA_TOKENS), **TINY_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = OFAModel(config)
        with torch.no_grad():
            model.encoder.embed_tokens.weight[words:] *= EXTRA_GAIN
            gains = {"cross_attn": CROSS_GAIN, "self_attn": SELF_GAIN}
            for name, param in model.decoder.layers.named_parameters():  # "0.cross_attn.q_proj.weight"
                if param.ndim == 2 and name.split(".")[1] in gains:
                    param.mul_(gains[name.split(".")[1]])
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "decoder.embed_tokens.weight"}
        save_file(state, str(tmp / "model.safetensors"))
        config.to_json_file(str(tmp / "config.json"))
    return folder
