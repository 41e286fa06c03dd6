"""What a trainable predictor plugs into the loop (:class:`TrainTask`), and the feature standardiser."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .data import PairData


class TrainTask(abc.ABC):
    """One trainable predictor: builds its model and datasets, computes the loss and predictions."""

    #: Written to ``config.json``; the predictor checks it.
    kind: str = ""
    #: Whether the task can train the CLIP tower itself (reads pixels instead of cached features).
    can_finetune: bool = False

    def __init__(self, arch: dict[str, Any]) -> None:
        self.arch = dict(arch)
        #: What :meth:`build` initialised the head from (recorded in ``config.json``), when not random.
        self.init_info: dict[str, Any] | None = None

    def configure(self, cfg: TrainConfig) -> None:
        """Adapt the architecture to the loop settings before :meth:`build`; refuse levers the task lacks
        (default: no head initialisation, no linear probe, no other input size)."""
        from promptblend.errors import ConfigError

        if cfg.head_init != "random" or cfg.lp_steps or cfg.image_size:
            raise ConfigError(f"{self.kind} supports none of head_init, lp_steps, image_size")

    def head_parameters(self, model) -> list:
        """The parameters a linear-probe phase trains (the task's head)."""
        raise NotImplementedError(f"{self.kind} has no head to probe")

    @abc.abstractmethod
    def build(self, data: PairData, train_idx: np.ndarray, out: Path, cfg: TrainConfig):
        """Create the model (a ``torch.nn.Module``); may save assets (a tokenizer) into ``out``."""

    @abc.abstractmethod
    def dataset(self, data: PairData, idx: np.ndarray, cfg: TrainConfig, train: bool):
        """A map-style dataset of the pairs ``idx``; ``train`` may add augmentation."""

    def stream(self, data: PairData, idx: np.ndarray, order, cfg: TrainConfig):
        """The batch dataset of the pixels of pairs ``idx`` in ``order`` (this rank's micro-batches of keys,
        see :class:`~.data.StepSampler`), for a task that trains the tower."""
        from promptblend.errors import ConfigError

        raise ConfigError(f"{self.kind} cannot train on pixels")

    def collate(self, items: list):
        """Batch dataset items; default: torch's."""
        from torch.utils.data import default_collate

        return default_collate(items)

    @abc.abstractmethod
    def loss(self, model, batch) -> torch.Tensor:
        """Mean loss of one batch (a scalar tensor)."""

    @abc.abstractmethod
    def predict(self, model, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
        """Predicted 384-d embeddings of the pairs ``idx`` (for the validation score)."""

    def evaluate(self, model, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> tuple[float, float]:
        """(mean loss, competition score) of ``model`` on the pairs ``idx``; default: a loss pass, then :meth:`predict`."""
        from promptblend.metric import score

        from .data import Keyed

        loader = torch.utils.data.DataLoader(
            Keyed(self.dataset(data, idx, cfg, train=False)), batch_size=cfg.batch_size, collate_fn=self.collate
        )
        device = next(model.parameters()).device
        total = 0.0
        for batch in loader:
            batch = type(batch)(t.to(device) for t in batch)
            total += float(self.loss(model, batch)) * int(batch[0].shape[0])
        return total / max(len(idx), 1), score(self.predict(model, data, idx, cfg), data.targets[idx])

    def param_groups(self, model, cfg: TrainConfig) -> list[dict[str, Any]]:
        """Optimiser groups (``lr_scale`` per group); default: every trainable parameter at the base lr."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]


class Standardise(torch.nn.Module):
    """``x -> (x - mean) / scale`` with statistics of the training CLIP features.

    CLIP embeddings of one domain share a large common component; centring them (and scaling
    coordinates to ~1) lets a freshly initialised head see what tells images apart. The statistics
    are buffers, so they travel with the weights (identity until :meth:`fit`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, feats: np.ndarray) -> Standardise:
        """Set the statistics from (N, dim) features; return self."""
        mean = feats.mean(0)
        self.mean.copy_(torch.from_numpy(mean))
        self.scale.fill_(max(float((feats - mean).std()), 1e-6))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale
