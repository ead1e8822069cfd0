"""Multi-process training under torchrun (DistributedDataParallel): gloo on CPU, nccl on GPU.

`torchrun --nproc-per-node N -m avel train ...` starts N copies of the same command; torchrun sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Every rank draws the same shuffled
global batch and takes its slice (rows[rank::world]); metrics are summed over ranks so every rank
takes the same early-stopping decision; rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from avel.errors import AvelError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process's index
    world: int = 1  # number of processes
    local_rank: int = 0  # index on this machine (selects the GPU)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'cpu' | 'cuda' | 'cuda:N' | 'auto' -> torch.device; a missing GPU is a user error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AvelError(f"device '{name}' requested but no CUDA GPU is available (use --device cpu)")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise AvelError(f"unknown device '{name}' (use cpu, cuda, cuda:N or auto)")
    return torch.device("cpu")


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity for a single process)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True if `flag` is true on any rank."""
    return all_reduce_sum([float(flag)], info, device)[0] > 0


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
