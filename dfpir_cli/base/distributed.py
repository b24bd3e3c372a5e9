"""This process's place in a ``torchrun`` job (one GPU, or the CPU, per process): for restore, eval and train."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError
from .device import pick_device


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (one process and rank 0 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` job described by RANK / WORLD_SIZE / LOCAL_RANK, or run alone.

    GPUs use NCCL, one GPU per process (``cuda:LOCAL_RANK``); CPUs use gloo. Rendezvous (also across
    nodes) is torchrun's business: it sets MASTER_ADDR / MASTER_PORT for the default ``env://`` init.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), pick_device(device_spec)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    spec = device_spec.strip().lower()
    use_cuda = torch.cuda.is_available() and (spec == "auto" or spec.startswith("cuda"))
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device_spec}: CUDA is not available on this machine")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
