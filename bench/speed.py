"""Time per VQ-VAE training step on this machine, one change at a time: precision, memory layout, batch, width.

    python bench/speed.py                 # the table (about two minutes on 2 cores)
    python bench/speed.py --steps 40      # more steps per row: steadier numbers

Each row trains the default VQ-VAE (or the row's variant) on mnist5k batches for ``--steps`` steps
after ``--warmup`` untimed ones, in this one process, so the ratios within a table are comparable;
absolute times depend on the machine. ``bf16`` rows use CPU autocast (``--amp bf16`` on a CPU with
native bfloat16 units; vqgen falls back to float32 elsewhere).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from vqgen.data.batches import make_loader
from vqgen.config import VQVAEConfig
from vqgen.data import load_image_data
from vqgen.device import autocast, cpu_has_bf16
from vqgen.losses import reconstruction_loss
from vqgen.models.vqvae import VQVAE

ROWS = [  # (name, batch, amp, channels_last, config changes)
    ("default: batch 16, fp32", 16, "off", False, {}),
    ("channels_last", 16, "off", True, {}),
    ("bf16 autocast", 16, "bf16", False, {}),
    ("bf16 + channels_last", 16, "bf16", True, {}),
    ("batch 64, fp32", 64, "off", False, {}),
    ("batch 64, bf16", 64, "bf16", False, {}),
    ("batch 64, bf16, hidden 64", 64, "bf16", False, {"hidden_channels": 64, "res_channels": 32}),
]


def time_row(batch: int, amp: str, channels_last: bool, changes: dict, steps: int, warmup: int) -> float:
    """Seconds per optimizer step (forward, loss, backward, Adam)."""
    torch.manual_seed(0)
    data = load_image_data("mnist5k")
    model = VQVAE(replace(VQVAEConfig(), **changes))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = make_loader(data.train, batch, shuffle=True, seed=0, drop_last=True, max_shift=2)
    batches.set_epoch(1)
    device = torch.device("cpu")
    started, done = None, 0
    for images, _ in batches:
        if done == warmup:
            started = time.perf_counter()
        images = images.contiguous(memory_format=fmt)
        with autocast(device, amp):
            recon, q = model(images)
            loss = reconstruction_loss(recon.float(), model.to_model(images), "psnr") + q.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if done == warmup + steps:
            break
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bfloat16 units: {cpu_has_bf16()}")
    print("| variant | ms / step | images / s | vs default (per image) |\n|---|---:|---:|---:|")
    base = None
    for name, batch, amp, cl, changes in ROWS:
        seconds = time_row(batch, amp, cl, changes, args.steps, args.warmup)
        per_image = seconds / batch
        base = base or per_image
        print(f"| {name} | {seconds * 1e3:.1f} | {1 / per_image:.0f} | {base / per_image:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
