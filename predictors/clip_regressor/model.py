"""The regression head and its training task (cosine loss against MiniLM prompt embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptblend.vectors import DIM

from ..training import PairData, Standardise, TrainTask


class RegressorHead(nn.Module):
    """CLIP embedding -> standardise -> Linear -> GELU -> Dropout -> Linear -> unit 384-d vector."""

    def __init__(self, clip_dim: int, hidden: int = 1024, dropout: float = 0.1, out_dim: int = DIM) -> None:
        super().__init__()
        self.norm = Standardise(clip_dim)
        self.net = nn.Sequential(
            nn.Linear(clip_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(self.norm(feats)), dim=-1)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine (rows of ``pred`` are unit, ``target`` rows are unit MiniLM vectors)."""
    return (1.0 - (pred * nn.functional.normalize(target, dim=-1)).sum(-1)).mean()


class RegressorTask(TrainTask):
    """Train :class:`RegressorHead` on cached CLIP features."""

    kind = "clip-regressor"

    def build(self, data: PairData, train_idx: np.ndarray, out: Path) -> RegressorHead:
        head = RegressorHead(data.features.shape[1], hidden=self.arch["hidden"], dropout=self.arch["dropout"])
        head.norm.fit(data.features[train_idx])
        return head

    def dataset(self, data: PairData, idx: np.ndarray):
        return torch.utils.data.TensorDataset(torch.from_numpy(data.features[idx]), torch.from_numpy(data.targets[idx]))

    def loss(self, model: RegressorHead, batch) -> torch.Tensor:
        feats, targets = batch
        return cosine_loss(model(feats), targets)

    def predict(self, model: RegressorHead, data: PairData, idx: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        return model(torch.from_numpy(data.features[idx]).to(device)).float().cpu().numpy()
