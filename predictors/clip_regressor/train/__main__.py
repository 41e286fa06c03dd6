"""Train a clip-regressor: ``python -m predictors.clip_regressor.train --images SET --out DIR [--finetune ...]``
(``torchrun --nproc_per_node N -m predictors.clip_regressor.train ...`` for data-parallel training)."""

from __future__ import annotations

from promptblend.cli import entry_point

from ... import training
from . import PRESETS


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Command line."""
    from ..model import RegressorTask

    return training.train_cli(RegressorTask, PRESETS, argv, "python -m predictors.clip_regressor.train")


if __name__ == "__main__":
    raise SystemExit(main())
