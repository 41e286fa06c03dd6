"""Train ClipCap: ``python -m predictors.clipcap.train --images DIR --prompts CSV --out DIR``."""

from __future__ import annotations

from promptblend.cli import entry_point

from .. import training
from .trainer import PRESETS


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Command line."""
    from .task import ClipCapTask

    return training.train_cli(ClipCapTask, PRESETS, argv, "python -m predictors.clipcap.train")


if __name__ == "__main__":
    raise SystemExit(main())
