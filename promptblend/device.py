"""The one device default: CUDA when there is a GPU, else the CPU."""

from __future__ import annotations


def default_device() -> str:
    """``cuda`` when available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """``device`` as given, or :func:`default_device` when it is None/empty."""
    return device or default_device()
