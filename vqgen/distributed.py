"""torch.distributed from torchrun's environment, and collectives that are no-ops in one process.

Single-process runs never touch torch.distributed: every collective here checks ``is_distributed()``.
Under ``torchrun`` every process runs the same program; ``setup`` joins the process group (gloo on
the CPU, nccl on CUDA) and registers ``cleanup`` to leave it when the process exits.

``rank()``, ``world_size()`` and ``is_main()`` describe the process group this process has joined,
and nothing else: before ``setup`` (or without torchrun) a process is rank 0 of 1, even when
torchrun's environment says otherwise. A process reads only its shard of the data
(``ShardedBatchSampler``) when the collectives that combine the shards really run; a process that
never joined is on its own and must read everything. So training commands call ``setup`` before
anything else, and commands that run as one process call ``refuse_under_torchrun`` (which stops
them before torchrun's N copies would each do the whole job). ``launch_rank()`` is the rank torchrun
gave the process, for the few things that must stay on one process even before ``setup``.

Data parallelism follows one rule: N processes with ``--batch-size b`` see, step by step, exactly the
batches one process with ``--batch-size N*b`` sees (``ShardedBatchSampler``), gradients are averaged by
DDP and the quantizer all-reduces its codebook statistics, so scaling out changes speed, not results
(up to float rounding).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
from collections.abc import Iterator

import torch
import torch.distributed as td
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from vqgen import seeds
from vqgen.errors import VQGenError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: torch.device) -> None:
    """Join the process group when started by torchrun (nccl on CUDA, gloo on CPU); else do nothing."""
    if not launched_by_torchrun() or td.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    atexit.register(cleanup)


def cleanup() -> None:
    """Leave the process group (safe to call more than once, and in one process)."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rank() -> int:
    """Rank in the process group; 0 when this process has joined none (see the module docstring)."""
    return td.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the process group; 1 when this process has joined none."""
    return td.get_world_size() if is_distributed() else 1


def launch_rank() -> int:
    """The rank torchrun gave this process (RANK), also before ``setup``; 0 without torchrun."""
    return _env_int("RANK", 0) if launched_by_torchrun() else 0


def refuse_under_torchrun(command: str) -> None:
    """One-process commands call this first: torchrun would start WORLD_SIZE copies that each do the whole job."""
    if _env_int("WORLD_SIZE", 1) > 1:
        raise VQGenError(f"vqgen {command} runs as one process; run it without torchrun")


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        td.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Let local rank 0 of each machine go first (e.g. to download a dataset), the other processes after it."""
    if not is_distributed():
        yield
        return
    if local_rank() != 0:
        barrier()
    yield
    if local_rank() == 0:
        barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks (a new tensor; ``t`` itself is left alone)."""
    if is_distributed():
        t = t.clone()
        td.all_reduce(t)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum of ``t`` over all ranks (a new tensor)."""
    if is_distributed():
        t = t.clone()
        td.all_reduce(t, op=td.ReduceOp.MIN)
    return t


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``t`` as rank ``src`` has it, on every rank."""
    if is_distributed():
        t = t.contiguous()
        td.broadcast(t, src)
    return t


def row_counts(t: torch.Tensor) -> list[int]:
    """``t.shape[0]`` of every rank, in rank order."""
    if not is_distributed():
        return [t.shape[0]]
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    td.all_gather(sizes, n)
    return [int(s.item()) for s in sizes]


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate (N_r, ...) tensors from every rank along dim 0, in rank order (ranks may differ in N_r)."""
    if not is_distributed():
        return t
    sizes = row_counts(t)
    padded = torch.zeros(max(sizes), *t.shape[1:], device=t.device, dtype=t.dtype)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    td.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def gather_picked_rows(t: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """``gather_rows(t)[pick]`` on every rank, but only the picked rows travel.

    ``pick`` holds row indices into the rank-order concatenation of every rank's ``t`` and must be
    the same on every rank (draw it on one rank and ``broadcast`` it). Each rank receives about
    ``len(pick)`` rows (each rank's share, padded to the largest share), not the whole concatenation.
    """
    if not is_distributed():
        return t[pick]
    sizes = row_counts(t)
    start = sum(sizes[: rank()])
    wanted = torch.unique(pick)  # sorted, so the gathered rows come back in this order
    mine = wanted[(wanted >= start) & (wanted < start + t.shape[0])] - start
    rows = gather_rows(t[mine])
    return rows[torch.searchsorted(wanted, pick)]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` under torchrun; ``model`` itself in one process.

    Buffers are synced from rank 0 once, at wrap time, but not before every forward: the only
    buffers (the quantizer's codebook statistics) stay identical through the quantizer's own
    all-reduces, and re-broadcasting them each step would only cost time.
    """
    if not is_distributed():
        return model
    kwargs = {"device_ids": [device.index] if device.type == "cuda" else None}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(model, forward_sync_buffers=False, **kwargs)
    return DistributedDataParallel(model, broadcast_buffers=False, **kwargs)  # older torch


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of a per-epoch seeded shuffle, cut so that N processes together read what one process would.

    Step i covers the global batch ``order[i*G:(i+1)*G]`` with ``G = batch_size * world_size``, and
    rank r takes the r-th contiguous slice of it (``shard``/``num_shards`` default to this process's
    rank and the world size). The order depends only on ``seed`` and the epoch (``set_epoch``), not
    on the number of processes. Unlike torch's DistributedSampler no item is repeated to even out
    the shards, so sums over ranks are exact. A short last global batch is split as evenly as
    possible; with ``drop_last`` it is dropped, unless it is the only one.

    ``variants`` V > 1: the dataset holds V versions of each of the ``num_items`` items (item i of version v
    at index v * num_items + i, e.g. the codes of shifted copies of an image); an epoch reads each item
    once, in a version drawn at random from (seed, epoch) like the shuffle.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        shard: int | None = None,
        num_shards: int | None = None,
        variants: int = 1,
    ):
        self.num_items, self.batch_size, self.variants = num_items, batch_size, variants
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank = rank() if shard is None else shard
        self.world_size = world_size() if num_shards is None else num_shards
        self.epoch: int | None = None
        self.passes = 0
        if drop_last and 0 < num_items < self.world_size:
            # training steps must be taken by every rank, so every rank needs at least one item
            raise VQGenError(
                f"torchrun: the training split has {num_items} items, fewer than the {self.world_size} processes"
            )

    def set_epoch(self, epoch: int) -> None:
        """Fix the shuffle to that of ``epoch``; without it, each pass over the loader takes the next one."""
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _global_bounds(self) -> list[tuple[int, int]]:
        full, rest = divmod(self.num_items, self.global_batch)
        bounds = [(i * self.global_batch, (i + 1) * self.global_batch) for i in range(full)]
        if rest and (not self.drop_last or full == 0):
            bounds.append((full * self.global_batch, self.num_items))
        return bounds

    def _my_slice(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's part of positions [start, stop): as in torch.tensor_split, the first ranks get one more."""
        size, extra = divmod(stop - start, self.world_size)
        first = start + self.rank * size + min(self.rank, extra)
        return first, first + size + (self.rank < extra)

    def _my_batches(self) -> list[tuple[int, int]]:
        slices = (self._my_slice(start, stop) for start, stop in self._global_bounds())
        return [(first, last) for first, last in slices if last > first]

    def __len__(self) -> int:
        return len(self._my_batches())

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.passes if self.epoch is None else self.epoch
        self.passes += 1
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=seeds.stream_generator(self.seed, seeds.SHUFFLE, epoch))
        else:
            order = torch.arange(self.num_items)
        if self.variants > 1:  # item i of the dataset's variants * num_items is variant i // num_items
            generator = seeds.stream_generator(self.seed, seeds.VARIANT, epoch)
            order = order + self.num_items * torch.randint(self.variants, (self.num_items,), generator=generator)[order]
        for first, last in self._my_batches():
            yield order[first:last].tolist()
