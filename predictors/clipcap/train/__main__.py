"""Train ClipCap: ``python -m predictors.clipcap.train --images SET --out DIR`` (through the shared loop)."""

from __future__ import annotations

from promptblend.cli import entry_point

from ... import training
from . import PRESETS


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Command line."""
    from ..task import ClipCapTask

    return training.train_cli(ClipCapTask, PRESETS, argv, "python -m predictors.clipcap.train")


if __name__ == "__main__":
    raise SystemExit(main())
