"""torch.distributed from torchrun's environment, and collectives that are no-ops in one process.

Single-process runs never touch torch.distributed: every helper here checks ``is_distributed()``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as td


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: torch.device) -> None:
    """Initialise the process group when started by torchrun (nccl on CUDA, gloo on CPU)."""
    if not launched_by_torchrun() or td.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def cleanup() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        td.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        td.all_reduce(t)
    return t


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        t = t.contiguous()
        td.broadcast(t, src)
    return t


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate (N_r, d) tensors from every rank along dim 0 (ranks may differ in N_r)."""
    if not is_distributed():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    td.all_gather(sizes, n)
    biggest = int(max(s.item() for s in sizes))
    padded = torch.zeros(biggest, *t.shape[1:], device=t.device, dtype=t.dtype)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    td.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])
