"""Distributed data-parallel helpers: torchrun (env://) or an already initialised process group.

Under ``torchrun --nproc_per_node P -m openmm_starmd.cli train ...`` every process trains on its own
random batches; gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op if absent or done)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(device: str | None) -> torch.device:
    """The requested device, or CUDA (local rank's GPU under DDP) when available, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel when a process group with more than one rank exists."""
    _, world = rank_and_world()
    if world == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # The χ head is unused on batches without torsions, hence find_unused_parameters.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def barrier() -> None:
    """Synchronise ranks (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
