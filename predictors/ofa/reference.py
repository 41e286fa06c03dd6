"""modelscope's OFA (``modelscope/models/multi_modal/ofa``), loaded as the reference this OFA is checked
against: by the parity test and the throughput benchmark (``pip install modelscope``: the ``dev`` extra).

modelscope's package ``__init__`` imports fairseq through other models, and fairseq does not import on
Python 3.11: the three files are loaded as modules of a stand-in package, with ``fairseq.modules.LayerNorm``
served as ``torch.nn.LayerNorm`` while they import. Its ``OFAModel`` predates transformers 5 (no
``GenerationMixin``, tuple caches, ``past_key_values``): :func:`reference_classes` adds the mixin and
adapts the cache plumbing, nothing else, so ``generate`` runs modelscope's own forward at every step.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

from promptblend.errors import ConfigError

PACKAGE = "_promptblend_modelscope_ofa"


def modelscope_ofa_dir() -> Path:
    """The installed ``modelscope/models/multi_modal/ofa`` folder (found without importing modelscope)."""
    spec = importlib.util.find_spec("modelscope")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("modelscope is not installed (the reference OFA): pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "multi_modal" / "ofa"


@functools.lru_cache(maxsize=1)
def reference_classes() -> tuple[type, type]:
    """``(OFAConfig, OFAModel)`` of modelscope, the model class with ``generate``."""
    import torch
    from transformers import GenerationMixin
    from transformers.modeling_outputs import Seq2SeqLMOutput

    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(modelscope_ofa_dir())]
    fairseq, modules = types.ModuleType("fairseq"), types.ModuleType("fairseq.modules")
    modules.LayerNorm, fairseq.modules = torch.nn.LayerNorm, modules
    stubs = {"fairseq": fairseq, "fairseq.modules": modules}
    added = {k: v for k, v in stubs.items() if k not in sys.modules}
    sys.modules[PACKAGE] = package
    sys.modules.update(added)
    try:
        config_module = importlib.import_module(f"{PACKAGE}.configuration_ofa")
        modeling = importlib.import_module(f"{PACKAGE}.modeling_ofa")
    finally:
        for k in added:
            sys.modules.pop(k, None)
    config_module.OFAConfig.forced_bos_token_id = None  # read by its __init__; gone from transformers 5's config

    class ReferenceOFA(modeling.OFAModel, GenerationMixin):
        """modelscope's OFAModel with transformers 5's ``generate`` (tuple caches reordered by its own
        ``_reorder_cache``; the full decoder input at each step, as its decoder expects)."""

        _expand_inputs_for_generation = GenerationMixin._expand_inputs_for_generation

        @classmethod
        def _supports_default_dynamic_cache(cls) -> bool:
            return False

        def prepare_inputs_for_generation(self, input_ids, cache=None, encoder_outputs=None, **kwargs):
            return {"decoder_input_ids": input_ids, "past_key_values": cache, "encoder_outputs": encoder_outputs}

        def forward(self, decoder_input_ids, encoder_outputs, past_key_values=None, **kwargs) -> Seq2SeqLMOutput:
            """modelscope's ``OFAModel.forward`` for generation, with the encoder mask sized to the new token
            when a cache is given (its decoder then reads only the last token)."""
            enc = encoder_outputs
            new = 1 if past_key_values else decoder_input_ids.shape[1]
            out = self.decoder(
                input_ids=decoder_input_ids, encoder_hidden_states=enc.last_hidden_state,
                encoder_attention_mask=modeling._expand_mask(enc.padding_mask, enc.last_hidden_state.dtype, new),
                src_pos_embed=enc.position_embedding, past_key_values=past_key_values, use_cache=True,
            )
            return Seq2SeqLMOutput(logits=out.last_hidden_state, cache=out.cache)

    return config_module.OFAConfig, ReferenceOFA


def save_reference_checkpoint(model: Any, folder: str | Path, tokenizer_folder: str | Path, **extra: Any) -> Path:
    """Write modelscope ``model`` as an OFA-Sys checkpoint folder: ``config.json`` (+ ``extra`` fields),
    ``pytorch_model.bin`` (its ``state_dict()``) and the tokenizer files of ``tokenizer_folder``."""
    import shutil

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.update(extra)
    (folder / "config.json").write_text(json.dumps(config, indent=1, default=str), encoding="utf-8")
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(Path(tokenizer_folder) / name, folder / name)
    return folder
