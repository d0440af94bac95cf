"""What both training stages share: device and precision, seeding, data loaders, LR schedule, logs."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vqgen import distributed as dist
from vqgen.augment import ShiftedBatches, ShiftedImages
from vqgen.errors import VQGenError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks this process's GPU when there is one (LOCAL_RANK under torchrun), else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise VQGenError("--device cuda: no CUDA GPU is available")
        if dist.local_rank() >= torch.cuda.device_count():
            raise VQGenError(
                f"--device cuda: local process {dist.local_rank()} has no GPU of its own on this machine "
                f"({torch.cuda.device_count()} GPUs); start at most that many processes per node"
            )
        return torch.device("cuda", dist.local_rank())
    if device != "cpu":
        raise VQGenError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed every generator a run may draw from (torch CPU and CUDA, Python, NumPy)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only; on the CPU training always runs in float32."""
    if amp not in ("off", *AMP_DTYPES):
        raise VQGenError(f"--amp must be off, bf16 or fp16, not {amp!r}")
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise VQGenError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a pass-through scaler otherwise (bf16 needs none)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")


def memory_format(device: torch.device, amp: str) -> torch.memory_format:
    """channels_last for mixed-precision convolutions on CUDA (tensor cores prefer NHWC); NCHW otherwise."""
    return torch.channels_last if device.type == "cuda" and amp != "off" else torch.contiguous_format


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    max_shift: int = 0,
) -> DataLoader:
    """Seeded loader; ``batch_size`` is per process, and under torchrun each rank reads its own shard.

    The batches come from ``ShardedBatchSampler``: the shuffle depends on (seed, epoch) only (call
    ``set_epoch``), N processes with batch b read exactly what one process with batch N*b reads, and
    no sample is repeated to even out the shards (evaluation over a split is exact).
    ``max_shift`` > 0: each image comes shifted by up to that many whole pixels (``vqgen.augment``),
    the shift drawn per (seed, epoch, index).
    """
    if batch_size < 1:
        raise VQGenError(f"--batch-size must be positive, not {batch_size}")
    if max_shift < 0:
        raise VQGenError(f"--augment-shift must be 0 or more pixels, not {max_shift}")
    batches = dist.ShardedBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    if max_shift:
        batches = ShiftedBatches(batches, max_shift)
        dataset = ShiftedImages(dataset)
    return DataLoader(
        dataset,
        batch_sampler=SkippableBatches(batches),
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def set_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Select the shuffle of ``epoch`` (every rank must pass the same number).

    ``skip_batches``: passes over this epoch start after that many batches, without loading them
    (a run resumed in the middle of an epoch continues with exactly the batches it had not seen).
    """
    batches = loader.batch_sampler
    if isinstance(batches, SkippableBatches):
        batches.set_skip(skip_batches)
        batches = batches.batches
    elif skip_batches:
        raise ValueError("skip_batches needs a loader from make_loader")
    if isinstance(batches, (dist.ShardedBatchSampler, ShiftedBatches)):
        batches.set_epoch(epoch)


class SkippableBatches(Sampler[list[int]]):
    """A batch sampler whose passes can start after their first few batches (for resuming mid-epoch).

    The skip holds until the next ``set_epoch``, so an extra ``iter()`` of the loader cannot use it up.
    """

    def __init__(self, batches: Sampler[list[int]]):
        self.batches = batches
        self.skip = 0

    def set_skip(self, count: int) -> None:
        self.skip = count

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.skip, None)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.05):
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class JsonlLog:
    """One JSON object per line, one line per ``write``; only rank 0 writes.

    The whole file is rewritten through a temporary name on every write (a log holds one line per
    epoch, so this is cheap): a crash never leaves a half-written line, and nothing is created
    before the first record. ``records`` are the lines so far (a resumed run passes its history).
    """

    def __init__(self, path: Path, records: list[dict[str, Any]] | None = None):
        self.path = path
        self.records = records if records is not None else []

    def write(self, record: dict[str, Any]) -> None:
        from vqgen.checkpoint import atomic_write_text

        self.records.append(record)
        if dist.is_main():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_finite(value: float, what: str, step: int, kept: str = "the last saved checkpoint is kept") -> None:
    """Stop the run (before the optimizer step, so nothing non-finite is ever saved) when a loss is NaN/inf."""
    if not math.isfinite(value):
        raise VQGenError(f"{what} became {value} at step {step}; stopping ({kept})")


def progress(iterable, total: int, desc: str, initial: int = 0) -> Iterator:
    """tqdm bar on rank 0 (silent elsewhere).

    Plain tqdm, not tqdm.auto: the latter's asyncio mixin calls ``iter()`` on the iterable up front,
    which for a DataLoader builds a second, unused iterator every epoch (and starts its workers).
    """
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, initial=initial, disable=not dist.is_main(), leave=False, dynamic_ncols=True
    )


def say(text: str, style: str | None = None) -> None:
    """One line on stderr from rank 0: notes and warnings (results go to stdout)."""
    if not dist.is_main():
        return
    from rich.console import Console

    Console(stderr=True).print(f"[{style}]{text}[/{style}]" if style else text, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    say(f"warning: {text}", "yellow")


# ----------------------------------------------------------------------------- stopping on a signal


class TrainingStopped(VQGenError):
    """The run stopped on SIGINT/SIGTERM after saving its state; the CLI exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the training loop to stop after the current step.

    The loop polls ``requested()`` after every step, saves its state and raises ``TrainingStopped``.
    In one process a second Ctrl-C quits at once (KeyboardInterrupt). Under torchrun repeated
    signals are ignored: the launcher forwards the terminal's Ctrl-C to workers that already got
    it, and kills them itself if they take too long. Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if self.signal is not None:
            if sig == signal.SIGINT and not dist.launched_by_torchrun():
                raise KeyboardInterrupt
            return
        self.signal = sig
        again = "" if dist.launched_by_torchrun() else " (Ctrl-C again quits at once, without saving)"
        say(f"{sig.name}: stopping after this step and saving the training state{again}", "yellow")

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether any process got a stop signal; under torchrun every rank gets the same answer (one all-reduce)."""
        wanted = self.signal is not None
        if dist.is_distributed():
            flag = torch.tensor(float(wanted), device=device)
            wanted = bool(dist.all_reduce_sum(flag).item() > 0)
        return wanted

    @property
    def exit_code(self) -> int:
        """The shell convention 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(self.signal or signal.SIGTERM)
