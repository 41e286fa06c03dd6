"""Training shared by the trainable predictors (clip-regressor, clipcap): one package, one module per concern.

``data`` (pairs, cached CLIP features and MiniLM targets, the batch order), ``checkpoint`` (atomic
safetensors weights and resume state), ``optim`` (layer-wise lr decay, schedule, EMA), ``loop`` (the
step loop), ``distributed`` (torchrun setup), ``metrics`` (CSV/JSON and curves), ``config``
(settings and the JSON presets in ``predictors/configs/train``), ``predictor`` (the trained-predictor
base) and ``api`` (``train`` and the shared CLI).
"""

from .api import train, train_cli
from .checkpoint import (
    CheckpointError,
    TrainingDivergedError,
    load_checkpoint,
    load_weights,
    read_checkpoint_state,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig, load_presets, split_settings
from .data import BatchPlan, PairData, prepare_pairs, prompt_targets, split_indices
from .loop import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, fit
from .metrics import plot_metrics, read_metrics, read_step_losses
from .predictor import TrainedClipPredictor, load_training_config
from .task import Standardise, TrainTask

__all__ = [
    "CHECKPOINT_FILE", "CONFIG_FILE", "MODEL_FILE", "BatchPlan", "CheckpointError", "PairData", "Standardise",
    "TrainConfig", "TrainTask", "TrainedClipPredictor", "TrainingDivergedError", "fit", "load_checkpoint",
    "load_presets", "load_training_config", "load_weights", "plot_metrics", "prepare_pairs", "prompt_targets",
    "read_checkpoint_state", "read_metrics", "read_step_losses", "save_checkpoint", "save_weights",
    "split_indices", "split_settings", "train", "train_cli",
]
