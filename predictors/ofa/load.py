"""Loading an OFA-Sys checkpoint folder (by path or hub id): config, weights checked key by key, tokenizer,
image transform, and captioning with the seed's settings.

A folder holds ``config.json``, ``vocab.json`` + ``merges.txt`` (BART's byte-level BPE) and
``pytorch_model.bin`` or ``model.safetensors``. Every parameter of the model must come from the
checkpoint: a missing key or a shape that disagrees raises :class:`CheckpointError` naming the first
few; keys the model does not use are named in a warning (OFA's image-generation tables and the index
buffers it derives are expected and only logged).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptblend.device import resolve_device
from promptblend.errors import ConfigError, ModelNotFoundError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
FOLDER_FILES = ("config.json", "vocab.json", "merges.txt", *WEIGHT_FILES)
#: Checkpoint keys captioning does not read: derived index buffers and the decoder's image-generation parts.
GENERATION_ONLY = re.compile(
    r"(^|\.)(token_rp_bucket|image_rp_bucket|image_position_idx)$"
    r"|^decoder\.(embed_image_positions|image_pos_ln|image_rel_pos_table_list|code_layernorm_embedding)\."
)
#: Names of the one token embedding OFA ties between encoder, decoder and (when shared) output projection.
TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
#: How many keys an error or warning names.
SHOWN = 5


def _checkpoint_error(message: str) -> Exception:
    from predictors.training.checkpoint import CheckpointError

    return CheckpointError(message)


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def resolve_folder(name_or_path: str) -> Path:
    """A local checkpoint folder, or the hub snapshot of ``name_or_path`` (offline: only a cached one)."""
    from .tiny import TINY_OFA, tiny_checkpoint

    if name_or_path == TINY_OFA:
        return tiny_checkpoint()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from predictors.captioner import looks_like_path

    if looks_like_path(name_or_path):
        raise ModelNotFoundError(f"OFA checkpoint folder does not exist: {name_or_path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=list(FOLDER_FILES)))
    except Exception as e:  # huggingface_hub raises its own offline / not-found / HTTP error types
        raise ModelNotFoundError(f"cannot load OFA checkpoint '{name_or_path}' (offline or missing): "
                                 f"{type(e).__name__}") from e


def read_config(folder: Path):
    """The folder's ``config.json`` as an :class:`OFAConfig`; unsupported settings raise :class:`ConfigError`."""
    from .config import OFAConfig, unsupported

    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotFoundError(f"{folder} has no config.json (not an OFA checkpoint folder)")
    try:
        config = OFAConfig(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable OFA config: {e}") from e
    bad = unsupported(config)
    if bad:
        raise ConfigError(f"{path}: settings this OFA does not implement: {', '.join(bad)}")
    return config


def read_weights(folder: Path) -> dict[str, Any]:
    """The checkpoint's tensors (safetensors, else ``torch.load(weights_only=True)``)."""
    import torch

    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign bytes: each reader raises its own types
            raise _checkpoint_error(f"{path} is truncated or not a weights file ({type(e).__name__}: {e})") from e
    raise ModelNotFoundError(f"{folder} has no weights ({' or '.join(WEIGHT_FILES)})")


def fill_state(model, state: dict[str, Any], source: str) -> dict[str, Any]:
    """``state`` checked against ``model``: tied names filled from each other, every parameter and statistic
    present with its shape (else :class:`CheckpointError`), unused keys dropped (named in a warning)."""
    import torch

    expected = model.state_dict()
    tied = list(TIED if model.config.share_decoder_input_output_embed else TIED[:2])
    present = next((state[k] for k in tied if k in state), None)
    if present is not None:
        state.update({k: present for k in tied if k not in state})
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise _checkpoint_error(f"{source}: {len(missing)} model parameter(s) missing from the checkpoint: "
                                f"{_listing(missing)}")
    wrong = [f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise _checkpoint_error(f"{source}: {len(wrong)} shape(s) differ from config.json: {_listing(wrong)}")
    unused = sorted(k for k in state if k not in expected and k not in tied)
    quiet = [k for k in unused if GENERATION_ONLY.search(k)]
    loud = [k for k in unused if not GENERATION_ONLY.search(k)]
    if loud:
        log.warning("%s: %d checkpoint key(s) not used by the model: %s", source, len(loud), _listing(loud))
    log.debug("%s: %d image-generation / derived keys ignored", source, len(quiet))
    out = {k: state[k] for k in expected if k in state}
    out.update({k: torch.zeros((), dtype=torch.long) for k in expected if k not in out})  # BN step counters
    return out


def build_model(folder: Path, config=None):
    """The :class:`OFAModel` of ``folder`` with every weight from its checkpoint (float32, CPU, eval mode)."""
    import torch

    from .model import OFAModel

    config = config if config is not None else read_config(folder)
    with torch.device("meta"):
        model = OFAModel(config)
    state = fill_state(model, read_weights(folder), str(folder))
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval()


def load_tokenizer(folder: Path, vocab_size: int):
    """BART's byte-level BPE from ``vocab.json`` + ``merges.txt`` with OFA's code and bin tokens appended."""
    from transformers import BartTokenizerFast

    from .config import EXTRA_TOKENS

    files = [folder / "vocab.json", folder / "merges.txt"]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ModelNotFoundError(f"{folder} has no {' or '.join(absent)} (OFA's tokenizer files)")
    tok = BartTokenizerFast(vocab=str(files[0]), merges=str(files[1]))
    tok.add_tokens([t for t in EXTRA_TOKENS if t not in tok.get_vocab()])
    if len(tok) > vocab_size:
        raise _checkpoint_error(f"{folder}: the tokenizer has {len(tok)} tokens, the model's vocabulary {vocab_size}")
    return tok


class OFAPixels:
    """Image -> (3, R, R) float32: RGB, bicubic resize to R x R, mean = std = 0.5 (OFA's preprocessing;
    picklable, no model)."""

    def __init__(self, resolution: int) -> None:
        from torchvision import transforms

        self.resolution = resolution
        self.steps = transforms.Compose([
            transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ])

    def __call__(self, image) -> Any:
        return self.steps(image.convert("RGB"))


def generation_config(config, num_beams: int, no_repeat_ngram_size: int, max_new_tokens: int):
    """The seed's decoding: beam search from ``<s>``; the pad token is never generated (as in OFA's own
    fairseq generator)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size, max_new_tokens=max_new_tokens,
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        forced_eos_token_id=config.forced_eos_token_id, suppress_tokens=[config.pad_token_id],
    )


@dataclass
class OFABundle:
    """An OFA model with its tokenizer and the image side its checkpoint names (None: not named), on one device."""

    model: Any
    tokenizer: Any
    resolution: int | None
    name: str
    device: str

    def query_ids(self, query: str, batch: int) -> Any:
        """``<s> query </s>`` token ids repeated ``batch`` times, on the model's device."""
        return self.tokenizer([query] * batch, return_tensors="pt")["input_ids"].to(self.device)

    def generate(self, pixel_values, query: str, num_beams: int = 5, no_repeat_ngram_size: int = 3,
                 max_new_tokens: int = 16) -> Any:
        """Token ids (B, T) of the captions of a (B, 3, R, R) batch asked ``query`` (batched beam search)."""
        import torch

        dtype = next(self.model.parameters()).dtype
        settings = generation_config(self.model.config, num_beams, no_repeat_ngram_size, max_new_tokens)
        with torch.inference_mode():
            return self.model.generate(
                input_ids=self.query_ids(query, len(pixel_values)),
                patch_images=pixel_values.to(self.device, dtype), generation_config=settings,
            )

    def decode(self, tokens) -> list[str]:
        """Caption texts of generated token ids."""
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def load_ofa(name_or_path: str, device: str | None = None) -> OFABundle:
    """Load (once per process and content) an OFA checkpoint by folder, hub id or ``pb-tiny-ofa``; float16 on
    CUDA. Missing folders or files raise :class:`ModelNotFoundError`, bad weights :class:`CheckpointError`."""
    from promptblend.digest import path_digest

    folder = resolve_folder(name_or_path)
    return _load_ofa(str(folder), name_or_path, resolve_device(device), path_digest(folder))


@functools.lru_cache(maxsize=2)
def _load_ofa(folder: str, name: str, device: str, content: str) -> OFABundle:
    """:func:`load_ofa` memoised by folder, device and the folder's digest ``content``."""
    import torch

    from .config import checkpoint_resolution

    config = read_config(Path(folder))
    tokenizer = load_tokenizer(Path(folder), config.vocab_size)
    model = build_model(Path(folder), config)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return OFABundle(model.to(device=device, dtype=dtype), tokenizer, checkpoint_resolution(config), name, device)
