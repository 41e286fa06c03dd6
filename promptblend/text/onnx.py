"""ONNX Runtime fp32 backend of :func:`promptblend.text.encode` for mean-pooled BERT-like
sentence-transformers models (all-MiniLM-L6-v2): exported once, BERT kernels fused, cached under
``cache_dir()/onnx/<key>/``; batches are bucketed by token length so they carry little padding."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.cache import cache_dir
from promptblend.digest import folder_digest
from promptblend.errors import EmbeddingError

from .model import load_text_model

log = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _export_key(model_dir: str) -> str:
    """Cache key of an export: the model folder's content (weights, config, tokenizer) and library versions."""
    from importlib import metadata

    stamp = [model_dir, folder_digest(model_dir)]
    stamp += [metadata.version(p) for p in ("torch", "onnxruntime", "transformers")]
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]


def export_onnx(model_dir: str, out_dir: Path) -> None:
    """Export the sentence-transformers model at ``model_dir`` (transformer + mean pooling) to
    ``out_dir/model.onnx`` with fused BERT ops, plus its ``tokenizer.json`` and ``meta.json``."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    st = load_text_model(model_dir, device="cpu")
    transformer, pooling = st[0], st[1]
    hf = transformer.auto_model
    mode = getattr(pooling, "pooling_mode", None) or ("mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else "?")
    if hf.config.model_type != "bert" or mode != "mean":
        raise EmbeddingError(f"the onnx backend supports mean-pooled BERT models only, not {model_dir}")
    hf = type(hf).from_pretrained(model_dir, attn_implementation="eager").eval()  # eager attention fuses

    class _MeanPooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.ones(2, 8, dtype=torch.long)
    mask = ids.clone()
    mask[1, 5:] = 0  # a padded row, so the traced graph keeps the mask path
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out_dir / "model.onnx", ".onnx") as raw:
        torch.onnx.export(
            _MeanPooled(hf),
            (ids, mask, torch.zeros_like(ids)),
            str(raw),
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in _INPUTS}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        fused = optimize_model(
            str(raw), model_type="bert", num_heads=hf.config.num_attention_heads, hidden_size=hf.config.hidden_size
        )
        fused.save_model_to_file(str(raw))
    st.tokenizer.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
    meta = {"source": model_dir, "max_seq_length": int(st.max_seq_length), "dim": int(hf.config.hidden_size)}
    atomic.write_text(out_dir / "meta.json", json.dumps(meta, indent=2))


class OnnxTextEncoder:
    """An exported model folder loaded in ONNX Runtime, with its tokenizer."""

    def __init__(self, folder: Path, threads: int | None = None):
        import onnxruntime as ort
        import torch
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.dim = int(meta["dim"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta["max_seq_length"]))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Mean-pooled (not normalised) float32 rows, in input order."""
        from ..progress import progress_bar

        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        order = np.argsort(-lengths, kind="stable")
        for start in progress_bar(range(0, len(texts), batch_size), disable=not progress, desc="encode", unit="batch"):
            rows = order[start : start + batch_size]
            ids = np.zeros((len(rows), int(lengths[rows].max())), np.int64)
            for r, i in enumerate(rows):
                ids[r, : lengths[i]] = encodings[i].ids
            mask = _mask(lengths[rows], ids.shape[1])
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[rows] = self.session.run(None, feeds)[0]
        return out


def _mask(lengths: np.ndarray, width: int) -> np.ndarray:
    return (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)


@functools.lru_cache(maxsize=2)
def load_onnx_encoder(model_dir: str) -> OnnxTextEncoder:
    """The ONNX encoder of the sentence-transformers folder ``model_dir``, exported on first use."""
    folder = cache_dir() / "onnx" / _export_key(model_dir)
    for litter in atomic.sweep_stale(folder):
        log.info("removed %s, left by an export that was killed", litter)
    if not (folder / "model.onnx").is_file() or not (folder / "meta.json").is_file():
        log.info("exporting %s to ONNX in %s (once)", model_dir, folder)
        export_onnx(model_dir, folder)
    return OnnxTextEncoder(folder)
