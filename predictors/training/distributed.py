"""Distributed setup in one place: torchrun's environment -> process group, device, rank helpers.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the loop runs data-parallel: NCCL on CUDA, gloo on CPU;
rank 0 alone writes checkpoints and metrics. Without it everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group of more than one process is running."""
        return self.world > 1


def setup(device: str | None) -> Dist:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; pick this rank's device."""
    import torch
    import torch.distributed as td

    from promptblend.device import default_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = device or default_device()
    if world <= 1:
        return Dist(device=device)
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local, device)


def teardown(dist: Dist) -> None:
    """Leave the process group (when this module joined one)."""
    import torch.distributed as td

    if dist.active and td.is_initialized():
        td.destroy_process_group()


def all_sum(dist: Dist, value: float) -> float:
    """Sum of ``value`` over ranks (in float64)."""
    import torch
    import torch.distributed as td

    if not dist.active:
        return float(value)
    t = torch.tensor([value], dtype=torch.float64)
    td.all_reduce(t)
    return float(t.item())


def any_rank(dist: Dist, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (so every rank takes the same branch)."""
    return all_sum(dist, float(flag)) > 0


def barrier(dist: Dist) -> None:
    """Wait for every rank."""
    import torch.distributed as td

    if dist.active:
        td.barrier()


def wrap(dist: Dist, model):
    """``model`` in DistributedDataParallel when data-parallel, else itself."""
    if not dist.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.local_rank] if dist.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
