"""Where a training step's time goes: seconds and FLOPs per image for each part of the VQ-VAE's and the
prior's training step, at the default recipe (or the sizes given), on this machine's CPU.

    python bench/profile_parts.py                       # float32 (--amp off), the default recipe
    python bench/profile_parts.py --amp bf16            # bfloat16 autocast
    python bench/profile_parts.py --vqvae hidden_channels=64 --prior num_layers=8

Each part (forward and backward together) is timed alone, on the batch the step would give it, as the
median of --repeats runs; "whole step" is the real training step (``vqgen.train.loop.train_step``) and
"data" one epoch of the loader, per image. FLOPs come from ``torch.utils.flop_counter`` (forward +
backward; convolutions and matrix products only, which is where the arithmetic is).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vqgen.config import PixelCNNConfig, PriorTrainOptions, VQVAEConfig, VQVAETrainOptions
from vqgen.data import load_image_data
from vqgen.data.batches import make_loader
from vqgen.device import autocast, memory_format, seed_everything
from vqgen.losses import reconstruction_loss
from vqgen.models import build_prior
from vqgen.models.prior import code_nll
from vqgen.models.vqvae import VQVAE


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """key=value pairs -> {key: int, float or str}."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def forward_backward(module: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A closure: the part's forward on detached copies of ``inputs`` (the float ones needing grad), then the
    backward of a random gradient of its output's shape, drawn once (drawing it is not the part's work: for the
    prior's head, millions of numbers)."""
    gradient: list[torch.Tensor] = []

    def run() -> None:
        args = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
        out = module(*args)
        out = out[0] if isinstance(out, tuple) else out
        out = getattr(out, "quantized", out)
        if not gradient:
            gradient.append(torch.randn_like(out))
        out.backward(gradient[0])
    return run


class Table:
    def __init__(self, title: str, batch: int):
        self.title, self.batch, self.rows = title, batch, []

    def add(self, part: str, fn: Callable[[], object], repeats: int, count_flops: bool = True) -> None:
        seconds = median_seconds(fn, repeats)
        self.rows.append((part, seconds / self.batch, flops(fn) / self.batch if count_flops else None))

    def print(self, whole: float) -> None:
        print(f"\n### {self.title} (batch {self.batch})\n")
        print("| part | ms / image | share of the parts | MFLOP / image |")
        print("|---|---:|---:|---:|")
        total = sum(s for _, s, _ in self.rows)
        for part, s, f in self.rows:
            shown = f"{f / 1e6:.1f}" if f is not None else "-"
            print(f"| {part} | {s * 1e3:.3f} | {s / total:.0%} | {shown} |")
        all_flops = sum(f for _, _, f in self.rows if f)
        print(f"| **sum of the parts** | **{total * 1e3:.3f}** | 100% | **{all_flops / 1e6:.1f}** |")
        print(f"| whole step (measured) | {whole * 1e3:.3f} | | |")


def profile_vqvae(args: argparse.Namespace, data, device: torch.device) -> None:
    opts = VQVAETrainOptions(amp=args.amp)
    cfg = VQVAEConfig(in_channels=data.channels, image_size=data.image_size, **parse_overrides(args.vqvae))
    fmt = memory_format(device, args.amp)  # as the trainer lays out its model and batches
    model = VQVAE(cfg).to(device, memory_format=fmt)
    batch_size = args.batch_size or opts.batch_size
    loader = make_loader(data.train, batch_size, shuffle=True, seed=0, drop_last=True, max_shift=opts.augment_shift)
    loader.set_epoch(1)
    images = next(iter(loader))[0].to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    model.train()
    with torch.no_grad():  # the quantizer's k-means init and a few EMA updates, as after the first step
        for _ in range(3):
            model(images)
    x = model.to_model(images).contiguous(memory_format=fmt)
    with torch.no_grad(), autocast(device, args.amp):
        z = model.encoder(x)
        q = model.quantizer(z).quantized
        recon = model.decoder(q)
    sized = model.cfg
    table = Table(f"train-vqvae, trunk {sized.hidden_channels} / head {sized.head_channels} channels, K="
                  f"{sized.num_codes}, {data.image_size[0]}x{data.image_size[1]}x{data.channels}, --amp {args.amp}",
                  batch_size)

    def amp(fn):
        def run():
            with autocast(device, args.amp):
                fn()
        return run

    table.add("encoder", amp(forward_backward(model.encoder, x)), args.repeats)
    table.add("quantizer", amp(forward_backward(model.quantizer, z)), args.repeats)
    table.add("decoder", amp(forward_backward(model.decoder, q)), args.repeats)
    table.add("loss", amp(forward_backward(lambda r: reconstruction_loss(r, x, opts.gan.recon_loss), recon.float())),
              args.repeats)
    table.add("optimizer (Adam)", lambda: optimizer.step(), args.repeats, count_flops=False)
    table.add("data (loader, shifts)", lambda: [b for b in loader], 1, count_flops=False)
    table.rows[-1] = (table.rows[-1][0], table.rows[-1][1] / len(loader), None)

    def step():
        with autocast(device, args.amp):
            recon, q = model(images)
            loss = reconstruction_loss(recon, model.to_model(images), opts.gan.recon_loss) + q.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    table.print(median_seconds(step, args.repeats) / batch_size)


def profile_prior(args: argparse.Namespace, device: torch.device, latent: tuple[int, int], num_codes: int) -> None:
    opts = PriorTrainOptions(amp=args.amp)
    cfg = PixelCNNConfig(num_codes=num_codes, latent_shape=latent, num_classes=10, label_dropout=0.1,
                         **parse_overrides(args.prior))
    fmt = memory_format(device, args.amp)  # as the trainer lays out its model
    model = build_prior(cfg).to(device, memory_format=fmt)
    batch_size = args.batch_size or opts.batch_size
    codes = torch.randint(0, num_codes, (batch_size, *latent), device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    model.train()
    x = model.embed(codes).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    table = Table(f"train-prior, PixelCNN {model.cfg.num_layers} layers x {cfg.channels} channels on {latent[0]}x"
                  f"{latent[1]} maps of K={num_codes}, --amp {args.amp}", batch_size)

    def amp(fn):
        def run():
            with autocast(device, args.amp):
                fn()
        return run

    def layer_fn(layer):
        return lambda v, h: layer(v, h, labels)[2]

    table.add("embedding", amp(forward_backward(lambda: model.embed(codes).sum(-1))), args.repeats)
    first, middle = model.layers[0], model.layers[1]
    table.add("gated layer 1", amp(forward_backward(layer_fn(first), x, x)), args.repeats)
    one = median_seconds(amp(forward_backward(layer_fn(middle), x, x)), args.repeats)
    rest = len(model.layers) - 1
    table.rows.append((f"gated layers 2..{rest + 1} ({rest} x one)", one * rest / batch_size,
                       flops(amp(forward_backward(layer_fn(middle), x, x))) * rest / batch_size))
    table.add("head", amp(forward_backward(model.head, x)), args.repeats)
    logits = torch.randn(batch_size, num_codes, *latent, device=device).contiguous(memory_format=fmt)
    table.add("loss (cross-entropy)", forward_backward(lambda lg: code_nll(lg, codes), logits), args.repeats)
    table.add("optimizer (Adam)", lambda: optimizer.step(), args.repeats, count_flops=False)

    def step():
        with autocast(device, args.amp):
            loss = code_nll(model(codes, labels), codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    table.print(median_seconds(step, args.repeats) / batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amp", default="off", choices=("off", "bf16"))
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each trainer's default")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vqvae", nargs="*", default=[], metavar="KEY=VALUE", help="VQVAEConfig fields")
    parser.add_argument("--prior", nargs="*", default=[], metavar="KEY=VALUE", help="PixelCNNConfig fields")
    parser.add_argument("--only", choices=("vqvae", "prior"), default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = torch.device("cpu")
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    data = load_image_data(args.data)
    cfg = VQVAEConfig(in_channels=data.channels, image_size=data.image_size, **parse_overrides(args.vqvae)).sized()
    if args.only != "prior":
        profile_vqvae(args, data, device)
    if args.only != "vqvae":
        profile_prior(args, device, cfg.latent_shape, cfg.num_codes)


if __name__ == "__main__":
    main()
