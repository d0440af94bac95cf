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


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower."""
    is_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(is_bf16() or is_amx())


def resolve_amp(device: torch.device, amp: str) -> str:
    """``--amp auto``: bf16 where the hardware does it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else off."""
    if amp not in ("auto", "off", *AMP_DTYPES):
        raise VQGenError(f"--amp must be auto, off, bf16 or fp16, not {amp!r}")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    return "bf16" if cpu_has_bf16() else "off"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 or fp16 on CUDA, bf16 on the CPU (``amp`` as resolved by ``resolve_amp``)."""
    amp = resolve_amp(device, amp)
    if amp == "off":
        return contextlib.nullcontext()
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise VQGenError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
        return torch.autocast("cuda", dtype=AMP_DTYPES[amp])
    if amp == "fp16":
        raise VQGenError("--amp fp16 needs a CUDA GPU; on the CPU use --amp bf16 (or auto)")
    return torch.autocast("cpu", dtype=torch.bfloat16)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a pass-through scaler otherwise (bf16 needs none)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")


def memory_format(device: torch.device, amp: str) -> torch.memory_format:
    """channels_last (NHWC) where convolutions run faster in it: mixed precision on CUDA (tensor cores), and
    the CPU (oneDNN's NHWC kernels); NCHW for float32 on CUDA."""
    if device.type == "cpu":
        return torch.channels_last
    return torch.channels_last if resolve_amp(device, amp) != "off" else torch.contiguous_format
