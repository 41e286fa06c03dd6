"""Figures without pyplot: a fresh :class:`matplotlib.figure.Figure`, saved atomically.

Library code never switches pyplot's backend; a ``Figure`` made here renders through Agg on save.
"""

from __future__ import annotations

from pathlib import Path

from promptblend import atomic


def new_figure(width: float = 6.4, height: float = 4.8, **kwargs):
    """A matplotlib ``Figure`` detached from pyplot (no global state, no backend switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kwargs)


def save_figure(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix) and return the path.

    ``tight``: crop to the drawn content (``bbox_inches="tight"``); False keeps the figure's own size.
    """
    path = Path(path)
    with atomic.atomic_path(path, path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format=path.suffix.lstrip(".") or "png")
    return path
