"""Where promptblend keeps caches that are not tied to a user's output folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$PROMPTBLEND_CACHE``, else ``~/.cache/promptblend``."""
    return Path(os.environ.get("PROMPTBLEND_CACHE", Path.home() / ".cache" / "promptblend"))
