"""Train the tiny open_clip model (``TINY_CLIP``, random init) contrastively on the demo's train split.

The result is a ``.safetensors`` file that :func:`promptblend.clip.load_clip` loads as
``load_clip(TINY_CLIP, path)``: its image tower feeds the demo's predictors, its text tower gives the
prompt bank's keys. A finished checkpoint is reused (the file name is a hash of data and settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from promptblend import atomic
from promptblend.clip import TINY_CLIP, register_clip_configs

from .data import DemoData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipTrainConfig:
    """Contrastive training settings (defaults: about a minute on 2 CPU cores for 1,200 pairs).

    Small batches train this tiny model faster per epoch than large ones (more updates): at 12
    epochs on 1,221 pairs, validation image->text top-1 was 0.09 / 0.13 / 0.19 for batches of
    128 / 64 / 32.
    """

    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    seed: int = 0
    model: str = TINY_CLIP

    def key(self, data: DemoData) -> str:
        """Hash of these settings and the data folder's identity."""
        blob = json.dumps({"config": asdict(self), "data": data.root.name}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass
class ClipCheckpoint:
    """A trained demo CLIP: ``load_clip(model, str(path))`` rebuilds it."""

    path: Path
    model: str
    metrics: dict

    @property
    def clip(self) -> tuple[str, str]:
        """``(model name, weights file)``, the form the predictors' ``clip=`` options take."""
        return self.model, str(self.path)


def image_tensor(pixels: np.ndarray, mean, std):
    """uint8 (N, S, S, 3) -> normalised float32 torch (N, 3, S, S), as open_clip's preprocess does."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def train_demo_clip(
    data: DemoData,
    out_dir: str | Path,
    config: ClipTrainConfig | None = None,
    progress: bool = True,
) -> ClipCheckpoint:
    """Train (or reuse) the demo CLIP on ``data``'s train split; return its checkpoint."""
    config = config or ClipTrainConfig()
    out_dir = Path(out_dir)
    path = out_dir / f"clip-{config.key(data)}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        log.info("demo CLIP: reusing %s", path)
        return ClipCheckpoint(path, config.model, json.loads(meta_path.read_text(encoding="utf-8")))

    import open_clip
    import torch
    from safetensors.torch import save_file

    register_clip_configs()
    torch.manual_seed(config.seed)
    model = open_clip.create_model(config.model, pretrained=None)
    pre = open_clip.get_model_preprocess_cfg(model)
    tokenizer = open_clip.get_tokenizer(config.model)

    images = image_tensor(data.pixels("train"), pre["mean"], pre["std"])
    tokens = tokenizer(data.prompts("train"))
    val_images = image_tensor(data.pixels("val"), pre["mean"], pre["std"])
    val_tokens = tokenizer(data.prompts("val"))

    t0 = time.perf_counter()
    losses, steps_per_epoch = _fit(model, images, tokens, config, progress)
    model.eval()
    metrics = {
        "train_pairs": len(images),
        "steps": len(losses),
        "train_time_s": round(time.perf_counter() - t0, 1),
        "first_epoch_loss": round(float(np.mean(losses[:steps_per_epoch])), 4),
        "final_loss": round(float(np.mean(losses[-steps_per_epoch:])), 4),
        "val_retrieval": retrieval_accuracy(model, val_images, val_tokens),
        "config": asdict(config),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic.atomic_path(path, ".safetensors") as tmp:
        save_file(state, str(tmp))
    atomic.write_text(meta_path, json.dumps(metrics, indent=2))
    log.info("demo CLIP: trained in %.0f s, val retrieval %s -> %s", metrics["train_time_s"], metrics["val_retrieval"], path)
    return ClipCheckpoint(path, config.model, metrics)


def _fit(model, images, tokens, config: ClipTrainConfig, progress: bool) -> tuple[list[float], int]:
    """Contrastive training (AdamW, sparse token embeddings, warmup + cosine schedule); (losses, steps per epoch)."""
    import torch
    from promptblend.progress import progress_bar

    model.token_embedding.sparse = True  # only the ~1k used rows of 49k get gradients and updates
    dense = [p for n, p in model.named_parameters() if n != "token_embedding.weight"]
    decay = [p for p in dense if p.ndim >= 2]
    no_decay = [p for p in dense if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    opt_emb = torch.optim.SparseAdam([model.token_embedding.weight], lr=config.lr)
    n = len(images)
    steps_per_epoch = max(1, n // config.batch_size)
    total = steps_per_epoch * config.epochs
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    bar = progress_bar(total=total, desc="demo CLIP", unit="step", disable=not progress)
    model.train()
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups + opt_emb.param_groups:
                group["lr"] = lr
            x = _augment(images[idx], gen)
            img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
            txt = torch.nn.functional.normalize(encode_text_trimmed(model, tokens[idx]), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            target = torch.arange(len(idx))
            loss = 0.5 * (
                torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)
            )
            opt.zero_grad(set_to_none=True)
            opt_emb.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            opt_emb.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.token_embedding.sparse = False
    return losses, steps_per_epoch


def encode_text_trimmed(model, tokens):
    """``model.encode_text`` on tokens cut after the longest prompt's end token.

    The text tower is causal and pools at the end token, so dropping the padding after it changes
    nothing but the cost (open_clip 3.x always runs the full 77-token context).
    """
    from open_clip.model import text_global_pool

    length = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return x @ model.text_projection


def _augment(x, gen):
    """Random horizontal flips and shifts of up to 1/16 of the side (nothing a prompt names)."""
    import torch

    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    pad = max(1, x.shape[-1] // 16)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def retrieval_accuracy(model, images, tokens, batch: int = 512) -> dict[str, float]:
    """Image -> text top-1 / top-5 accuracy among the given pairs (chance is 1/N)."""
    import torch

    with torch.inference_mode():
        img = torch.cat([model.encode_image(images[i : i + batch]) for i in range(0, len(images), batch)])
        txt = torch.cat([encode_text_trimmed(model, tokens[i : i + batch]) for i in range(0, len(tokens), batch)])
        sims = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
        rank = (sims > sims.diagonal()[:, None]).sum(1)
    return {
        "n": len(images),
        "top1": round(float((rank < 1).float().mean()), 4),
        "top5": round(float((rank < 5).float().mean()), 4),
    }
