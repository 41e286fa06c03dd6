"""The regression head, the fine-tuned tower + head, and their training task (cosine loss to MiniLM vectors)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptblend.vectors import DIM

from ..training import PairData, Standardise, TrainConfig, TrainTask
from ..training.data import image_batches, loader, pixel_batches
from ..training.optim import visual_param_groups

#: Images whose initial tower features set the head's standardiser when fine-tuning.
STATS_IMAGES = 512


class RegressorHead(nn.Module):
    """CLIP embedding -> standardise -> Linear -> GELU -> Dropout -> Linear -> unit 384-d vector; with
    ``linear`` a linear branch is added to the MLP's output (what a text-map initialisation sets)."""

    def __init__(self, clip_dim: int, hidden: int = 1024, dropout: float = 0.1, out_dim: int = DIM,
                 linear: bool = False) -> None:
        super().__init__()
        self.norm = Standardise(clip_dim)
        self.net = nn.Sequential(
            nn.Linear(clip_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
        self.linear = nn.Linear(clip_dim, out_dim) if linear else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.norm(feats)
        out = self.net(z) if self.linear is None else self.net(z) + self.linear(z)
        return nn.functional.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def init_from_text_map(self, tmap, alpha: int) -> None:
        """Start as the text map (penalty index ``alpha``) across the modality gap, the standardiser's
        mean being the image mean: ``map(x - mean + text_mean) = (z * scale) @ W + text_mean @ W + b``
        with ``z`` the standardised input; the MLP's output layer is zeroed so the head equals the map
        until it trains."""
        w, b = torch.from_numpy(tmap.weights[alpha]).float(), torch.from_numpy(tmap.biases[alpha]).float()
        self.linear.weight.copy_((w * self.norm.scale).T)
        self.linear.bias.copy_(torch.from_numpy(tmap.text_mean).float() @ w + b)
        self.net[-1].weight.zero_()
        self.net[-1].bias.zero_()


def build_head(clip_dim: int, arch: dict, dropout: float | None = None) -> RegressorHead:
    """The head an architecture dict describes (``dropout``: override, e.g. 0 for serving)."""
    return RegressorHead(clip_dim, arch["hidden"], arch["dropout"] if dropout is None else dropout,
                         linear=bool(arch.get("linear")))


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


def new_tower(name: str, pretrained: str | None = None, image_size: int | None = None) -> tuple[nn.Module, object]:
    """A private copy of a CLIP's vision tower (weights from ``pretrained``, random when None) and its
    eval transform, at ``image_size`` px when given (position embeddings interpolated); the cached
    :func:`promptblend.clip.load_clip` bundle itself is never modified."""
    from promptblend.clip import load_clip

    from ..clip_views import View, resize_tower, view_transform

    bundle = load_clip(name, pretrained, "cpu")
    visual = copy.deepcopy(bundle.model.visual)
    if image_size is None:
        return visual, bundle.preprocess
    resize_tower(visual, image_size)
    return visual, view_transform(bundle.preprocess, View(), image_size)


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


class RegressorTask(TrainTask):
    """Train :class:`RegressorHead` on cached CLIP features, or (``finetune``) the tower with it on pixels."""

    kind = "clip-regressor"
    can_finetune = True

    def configure(self, cfg: TrainConfig) -> None:
        """A text-map head gets its linear branch (every lever is supported)."""
        if cfg.head_init == "text-map":
            self.arch["linear"] = True

    def head_parameters(self, model: nn.Module) -> list:
        return list(model.head.parameters())

    def _init_head(self, head: RegressorHead, clip: tuple[str, str | None], cfg: TrainConfig, feats: np.ndarray) -> None:
        """The text-map initialisation (``cfg.head_init``; the penalty chosen for the training images'
        features ``feats``), recorded in :attr:`init_info`."""
        if cfg.head_init != "text-map":
            return
        from promptblend.bank import load_bank
        from promptblend.clip import load_clip

        from ..clip_text_map import text_map_for

        bank = load_bank(cfg.bank)
        bank.check_key_model(*clip)
        tmap = text_map_for(bank, load_clip(clip[0], clip[1], "cpu").identity)
        alpha = tmap.choose(feats)
        head.init_from_text_map(tmap, alpha)
        self.init_info = {"kind": "text-map", "map": tmap.info["key"], "bank": tmap.info["bank"],
                          "alpha": tmap.info["alphas"][alpha], "held_out_score": tmap.info["held_out_scores"][alpha]}

    def build(self, data: PairData, train_idx: np.ndarray, out: Path, cfg: TrainConfig) -> nn.Module:
        if not cfg.finetune:
            head = build_head(data.features.shape[1], self.arch)
            head.norm.fit(data.features[train_idx])
            self._init_head(head, data.clip, cfg, data.features[train_idx])
            return head
        visual, self.preprocess = new_tower(*data.clip, image_size=cfg.image_size)
        model = FinetunedRegressor(visual, build_head(visual.output_dim, self.arch))
        with torch.no_grad():
            feats = torch.cat([model.features(x) for x in self._first_images(data, train_idx, cfg.num_workers)])
        model.head.norm.fit(feats.numpy())
        self._init_head(model.head, data.clip, cfg, feats.numpy())
        freeze_tower(visual, cfg.unfreeze_last)
        if cfg.grad_checkpointing:
            visual.set_grad_checkpointing(True)
        return model

    def _first_images(self, data: PairData, train_idx: np.ndarray, workers: int):
        """Pixel batches of the first :data:`STATS_IMAGES` training images (decoded in ``workers``)."""
        yield from loader(image_batches(data.images, train_idx[:STATS_IMAGES], self.preprocess, 64), workers)

    def stream(self, data: PairData, idx: np.ndarray, order, cfg: TrainConfig):
        """Fine-tuning batches of pairs ``idx`` in ``order``, from any source (augmented when ``cfg.augment``)."""
        augment = train_transform(self.preprocess) if cfg.augment else None
        return pixel_batches(data.images, idx, order, self.preprocess, augment, cfg.seed, data.targets[idx])

    def dataset(self, data: PairData, idx: np.ndarray, cfg: TrainConfig, train: bool):
        """Cached CLIP features and targets (fine-tuning reads pixels through :meth:`stream` instead)."""
        return torch.utils.data.TensorDataset(torch.from_numpy(data.features[idx]), torch.from_numpy(data.targets[idx]))

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        inputs, targets = batch
        return cosine_loss(model(inputs), targets)

    def predict(self, model: nn.Module, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
        device = next(model.parameters()).device
        if not cfg.finetune:
            return model(torch.from_numpy(data.features[idx]).to(device)).float().cpu().numpy()
        batches = loader(image_batches(data.images, idx, self.preprocess, cfg.batch_size), cfg.num_workers)
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
