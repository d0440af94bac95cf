"""What both training stages share: device and precision, seeding, data loaders, LR schedule, logs."""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vqgen import distributed as dist
from vqgen.errors import VQGenError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks this process's GPU when there is one (LOCAL_RANK under torchrun), else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise VQGenError("--device cuda: no CUDA GPU is available")
        return torch.device("cuda", dist.local_rank())
    if device != "cpu":
        raise VQGenError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only; on the CPU training always runs in float32."""
    if amp not in ("off", *AMP_DTYPES):
        raise VQGenError(f"--amp must be off, bf16 or fp16, not {amp!r}")
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0, drop_last: bool = False
) -> DataLoader:
    """Seeded loader; under torchrun each rank reads its own shard and ``batch_size`` is per process."""
    if batch_size < 1:
        raise VQGenError(f"--batch-size must be positive, not {batch_size}")
    sampler = None
    generator = None
    if dist.is_distributed():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    else:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last and len(dataset) >= batch_size,
        persistent_workers=num_workers > 0,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.05):
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class JsonlLog:
    """Append one JSON object per line; only rank 0 writes."""

    def __init__(self, path: Path, fresh: bool = True):
        self.path = path
        if dist.is_main() and fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if dist.is_main():
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_finite(value: float, what: str, step: int) -> None:
    if not math.isfinite(value):
        raise VQGenError(f"{what} became {value} at step {step}; stopping (the last saved checkpoint is kept)")


def progress(iterable, total: int, desc: str) -> Iterator:
    """tqdm bar on rank 0 (silent elsewhere)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not dist.is_main(), leave=False, dynamic_ncols=True)
