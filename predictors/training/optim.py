"""Optimiser pieces: layer-wise lr decay groups (timm), warmup + cosine schedule, EMA weights."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

#: open_clip's VisionTransformer has no ``group_matcher``; this one (timm's mechanism) gives the
#: stem depth 0, resblock i depth i + 1 and everything after the blocks (ln_post, proj) the top.
VISUAL_GROUPS = {
    "stem": r"^(?:conv1|class_embedding|positional_embedding|ln_pre|patch_dropout)",
    "blocks": r"^transformer\.resblocks\.(\d+)",
}


class _Grouped(nn.Module):
    """A CLIP visual tower seen through :data:`VISUAL_GROUPS` (what timm's decay function reads)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def named_parameters(self, *args, **kwargs):  # the tower's own names, so the matcher sees them
        return self.visual.named_parameters(*args, **kwargs)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return VISUAL_GROUPS


def visual_param_groups(visual: nn.Module, weight_decay: float, llrd: float) -> list[dict[str, Any]]:
    """timm's ``param_groups_layer_decay`` over an open_clip VisionTransformer: each group carries
    ``lr_scale`` = ``llrd ** (depth_max - depth)`` and no weight decay on 1-d tensors and embeddings."""
    from timm.optim import param_groups_layer_decay

    return param_groups_layer_decay(
        _Grouped(visual), weight_decay=weight_decay, layer_decay=llrd,
        no_weight_decay_list=("class_embedding", "positional_embedding"),
    )


def lr_factor(step: int, total: int, warmup: int, schedule: str, lp: int = 0) -> float:
    """Multiplier of the base lr at ``step``: 1 during the ``lp`` linear-probe steps, then (counted from the
    end of the probe) linear warmup, then constant or cosine to zero."""
    if step < lp:
        return 1.0
    step, total = step - lp, total - lp
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``groups`` (each may carry ``lr_scale`` and its own ``weight_decay``)."""
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


class Ema:
    """Exponential moving average of a model's floating-point state (timm's ModelEma with warmup:
    the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(cur.detach(), alpha=1 - d)
            else:
                avg.copy_(cur)
