"""Shared command-line plumbing: logging set up once, typed errors turned into one clear line."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from .errors import PromptblendError


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main``: configure logging, print ``error: ...`` and exit 2 on bad input."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return int(main(argv) or 0)
        except PromptblendError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
            return 130

    return wrapper
