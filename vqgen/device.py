"""Where and in what precision a run computes: device choice, seeding, autocast, loss scaling."""

from __future__ import annotations

import contextlib
import random

import torch

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
