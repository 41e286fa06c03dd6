"""The regression head, the fine-tuned tower + head, and their training task (cosine loss to MiniLM vectors)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptblend.vectors import DIM

from ..training import PairData, Standardise, TrainConfig, TrainTask
from ..training.data import ImageFiles, ImagePairs, ShardBatches
from ..training.optim import visual_param_groups

#: Images whose initial tower features set the head's standardiser when fine-tuning.
STATS_IMAGES = 512


class RegressorHead(nn.Module):
    """CLIP embedding -> standardise -> Linear -> GELU -> Dropout -> Linear -> unit 384-d vector."""

    def __init__(self, clip_dim: int, hidden: int = 1024, dropout: float = 0.1, out_dim: int = DIM) -> None:
        super().__init__()
        self.norm = Standardise(clip_dim)
        self.net = nn.Sequential(
            nn.Linear(clip_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(self.norm(feats)).float(), dim=-1)


class FinetunedRegressor(nn.Module):
    """An open_clip vision tower trained end to end with the head: pixels -> unit 384-d vector."""

    def __init__(self, visual: nn.Module, head: RegressorHead) -> None:
        super().__init__()
        self.visual, self.head = visual, head

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit tower embeddings of a pixel batch."""
        return nn.functional.normalize(self.visual(pixels).float(), dim=-1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))


def new_tower(name: str, pretrained: str | None = None) -> tuple[nn.Module, object]:
    """A private copy of a CLIP's vision tower (weights from ``pretrained``, random when None) and its
    eval transform; the cached :func:`promptblend.clip.load_clip` bundle itself is never modified."""
    from promptblend.clip import load_clip

    bundle = load_clip(name, pretrained, "cpu")
    return copy.deepcopy(bundle.model.visual), bundle.preprocess


def train_transform(preprocess):
    """Random resized crop (80-100% of the area) and horizontal flip, then CLIP's tensor + normalise steps."""
    from torchvision import transforms as T

    size = preprocess.transforms[1].size
    return T.Compose([T.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), *preprocess.transforms[-3:]])


def freeze_tower(visual: nn.Module, unfreeze_last: int | None) -> None:
    """Train only the last ``unfreeze_last`` blocks and the output norm/projection (None: all of it)."""
    if unfreeze_last is None:
        return
    for p in visual.parameters():
        p.requires_grad_(False)
    blocks = list(visual.transformer.resblocks)
    for module in [*blocks[len(blocks) - unfreeze_last :], visual.ln_post]:
        module.requires_grad_(True)
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        visual.proj.requires_grad_(True)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine (rows of ``pred`` are unit, ``target`` rows are unit MiniLM vectors)."""
    return (1.0 - (pred * nn.functional.normalize(target.float(), dim=-1)).sum(-1)).mean()


def _image_batches(paths, transform, batch_size: int, num_workers: int):
    return torch.utils.data.DataLoader(ImageFiles(paths, transform), batch_size=batch_size, num_workers=num_workers)


class RegressorTask(TrainTask):
    """Train :class:`RegressorHead` on cached CLIP features, or (``finetune``) the tower with it on pixels."""

    kind = "clip-regressor"
    can_finetune = True

    def build(self, data: PairData, train_idx: np.ndarray, out: Path, cfg: TrainConfig) -> nn.Module:
        if not cfg.finetune:
            head = RegressorHead(data.features.shape[1], hidden=self.arch["hidden"], dropout=self.arch["dropout"])
            head.norm.fit(data.features[train_idx])
            return head
        visual, self.preprocess = new_tower(*data.clip)
        model = FinetunedRegressor(visual, RegressorHead(visual.output_dim, self.arch["hidden"], self.arch["dropout"]))
        with torch.no_grad():
            feats = torch.cat([model.features(x) for x in self._first_images(data, train_idx)])
        model.head.norm.fit(feats.numpy())
        freeze_tower(visual, cfg.unfreeze_last)
        if cfg.grad_checkpointing:
            visual.set_grad_checkpointing(True)
        return model

    def _first_images(self, data: PairData, train_idx: np.ndarray):
        """Batches of the first :data:`STATS_IMAGES` training images (streamed from shards when there are)."""
        if data.shards is None:
            yield from _image_batches([data.paths[i] for i in train_idx[:STATS_IMAGES]], self.preprocess, 64, 0)
            return
        images = [self.preprocess(im) for _, im in data.shards.samples(0, STATS_IMAGES, split_workers=False)]
        yield from torch.stack(images).split(64)

    def stream(self, data: PairData, plan, start: int, stop: int, cfg: TrainConfig):
        """Fine-tuning batches streamed from ``data.shards`` (augmented when ``cfg.augment``)."""
        augment = train_transform(self.preprocess) if cfg.augment else None
        return ShardBatches(data.shards, plan, start, stop, data.targets[: plan.n], self.preprocess, augment, cfg.seed)

    def dataset(self, data: PairData, idx: np.ndarray, cfg: TrainConfig, train: bool):
        if not cfg.finetune:
            return torch.utils.data.TensorDataset(
                torch.from_numpy(data.features[idx]), torch.from_numpy(data.targets[idx])
            )
        augment = train_transform(self.preprocess) if train and cfg.augment else None
        return ImagePairs([data.paths[i] for i in idx], data.targets[idx], self.preprocess, augment, cfg.seed)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        inputs, targets = batch
        return cosine_loss(model(inputs), targets)

    def predict(self, model: nn.Module, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
        device = next(model.parameters()).device
        if not cfg.finetune:
            return model(torch.from_numpy(data.features[idx]).to(device)).float().cpu().numpy()
        batches = _image_batches([data.paths[i] for i in idx], self.preprocess, cfg.batch_size, cfg.num_workers)
        return np.concatenate([model(x.to(device)).float().cpu().numpy() for x in batches])

    def evaluate(self, model: nn.Module, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> tuple[float, float]:
        """One prediction pass: the cosine loss is 1 - the competition score."""
        from promptblend.metric import score

        value = score(self.predict(model, data, idx, cfg), data.targets[idx])
        return 1.0 - value, value

    def param_groups(self, model: nn.Module, cfg: TrainConfig) -> list[dict]:
        """Fine-tuning: timm's layer-decay groups over the tower plus the head at ``head_lr``."""
        if not cfg.finetune:
            return super().param_groups(model, cfg)
        groups = visual_param_groups(model.visual, cfg.weight_decay, cfg.llrd)
        head_scale = (cfg.head_lr or cfg.lr) / cfg.lr
        return groups + [{"params": list(model.head.parameters()), "lr_scale": head_scale}]
