"""open_clip loading by name, pretrained tag or local weights file, plus batched image/text embedding.

``TINY_CLIP`` is a registered tiny architecture (random init, offline) for tests and the demo.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from promptblend.device import default_device
from promptblend.digest import file_digest
from promptblend.errors import ModelNotFoundError

TINY_CLIP = "pb-tiny-clip"
_CONFIG_DIR = Path(__file__).parent / "clip_configs"


@functools.lru_cache(maxsize=1)
def register_clip_configs() -> None:
    """Make the architectures in ``promptblend/clip_configs`` known to open_clip."""
    import open_clip

    for f in sorted(_CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(f)


@dataclass
class ClipBundle:
    """A CLIP model with its image preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    name: str
    pretrained: str | None
    device: str
    weights_digest: str | None = None  # content digest of a local weights file, taken when it was loaded

    @functools.cached_property
    def identity(self) -> str:
        """What names these weights, for cache keys and bank checks: see :func:`clip_identity`."""
        return clip_identity(self.name, self.pretrained, self.model, self.weights_digest)

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else int(
            self.model.visual.output_dim
        )


def is_weights_file(pretrained: str | None) -> bool:
    """Whether ``pretrained`` names a local weights file rather than an open_clip tag."""
    return bool(pretrained) and ("/" in pretrained or pretrained.endswith((".safetensors", ".pt", ".bin", ".pth")))


def clip_identity(name: str, pretrained: str | None, model: Any = None, digest: str | None = None) -> str:
    """The one identity of a CLIP model: ``name`` plus its tag, its weights file's content digest
    (``digest`` when known, else read now), or (random weights) a digest of the model's tensors
    (``random`` when no model is given)."""
    if is_weights_file(pretrained):
        ident = f"file-{(digest or file_digest(pretrained))[:16]}"
    elif pretrained:
        ident = pretrained
    elif model is not None:
        h = hashlib.sha256()
        for t in model.state_dict().values():
            h.update(t.detach().float().cpu().numpy().tobytes())
        ident = f"random-{h.hexdigest()[:12]}"
    else:
        ident = "random"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{ident}")


def load_clip(model_name: str, pretrained: str | None = None, device: str | None = None) -> ClipBundle:
    """Build an open_clip model (cached per process while a local weights file's content is unchanged).

    ``model_name`` is an open_clip architecture (``ViT-B-32``, ``hf-hub:org/name``) or ``TINY_CLIP``;
    ``pretrained`` is a tag (``laion2b_s32b_b79k``), a local weights file (.safetensors/.pt/.bin),
    or None for random weights.
    """
    device = device or default_device()
    content = None
    if is_weights_file(pretrained):
        if not Path(pretrained).is_file():
            raise ModelNotFoundError(f"CLIP weights file not found: {pretrained}")
        content = file_digest(pretrained)
    return _load_clip(model_name, pretrained, device, content)


@functools.lru_cache(maxsize=4)
def _load_clip(model_name: str, pretrained: str | None, device: str, content: str | None) -> ClipBundle:
    """:func:`load_clip` memoised by name, tag or path, device and the weights file's digest."""
    import open_clip

    register_clip_configs()
    try:
        with _seeded(0 if not pretrained else None):  # random weights: the same in every process
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except RuntimeError as e:
        raise ModelNotFoundError(f"cannot load CLIP {model_name} ({pretrained}): {_one_line(e)}") from e
    except Exception as e:  # hub/network errors surface as many types offline
        if is_weights_file(pretrained):  # junk, pickled or truncated: torch/safetensors raise many types
            raise ModelNotFoundError(
                f"cannot load CLIP weights file {pretrained} for {model_name}: {type(e).__name__}: {_one_line(e)}"
            ) from e
        if type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError", "OSError"):
            raise ModelNotFoundError(f"cannot load CLIP {model_name} ({pretrained}) offline: {e}") from e
        raise
    model.eval()
    return ClipBundle(model, preprocess, tokenizer, model_name, pretrained, device, content)


def _one_line(err: BaseException) -> str:
    """An error's message on one line, cut at 300 characters (torch's load errors run to many lines)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def embed_images(bundle: ClipBundle, pixels) -> np.ndarray:
    """CLIP image embeddings of a preprocessed batch (B, 3, H, W), float32 unit rows."""
    import torch

    with torch.inference_mode(), autocast(bundle.device):
        feats = bundle.model.encode_image(pixels.to(bundle.device))
    feats = feats.float()
    return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


def embed_texts(bundle: ClipBundle, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """CLIP text embeddings, float32 unit rows, batched."""
    import torch
    from .progress import progress_bar

    out = []
    for start in progress_bar(range(0, len(texts), batch_size), disable=not progress, desc="clip text", unit="batch"):
        tokens = bundle.tokenizer(list(texts[start : start + batch_size])).to(bundle.device)
        with torch.inference_mode(), autocast(bundle.device):
            feats = bundle.model.encode_text(tokens).float()
        out.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
    dim = bundle.embed_dim
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def _seeded(seed: int | None):
    """Fork torch's RNG and seed it (a no-op context when ``seed`` is None)."""
    import contextlib

    import torch

    if seed is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    torch.manual_seed(seed)
    return stack


def autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
