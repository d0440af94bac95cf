"""Sampling speed benchmark (issue 4): full recompute vs the cached sampler, and guidance's cost.

A randomly initialised prior of the default size (PixelCNNConfig defaults: 15 layers, 64 channels,
kernel 3, K=512) samples one batch per latent size with each sampler; the table gives seconds
per batch, the speed-up of the cached sampler and the peak memory of each run. Every run is
a fresh process, so its peak memory is its own: the growth of the peak resident set size
(ru_maxrss) from just before sampling (model built, imports done) to the end.

The full sampler costs one whole-map forward pass per position, so on large maps it is timed
on its first --full-positions positions and extrapolated per position (marked "estimated");
maps of up to 64 positions always run completely. --full-all runs it completely everywhere
(about 35 minutes at 32x32 on 2 idle cores). Both samplers use the same seed: the table also
says whether the cached codes equal the full sampler's (on the positions it ran), and how many
full passes each made (the cached sampler: one per check of its near-tied draws, usually 0 or 1).

A second table times classifier-free guidance: a conditional prior (10 classes, label dropout)
sampled by the cached sampler with --guidance S (default 2) against S = 1, which runs only the
conditional rows; guidance batches both halves, so the target is at most 2.2x the time.

    python bench/sampling.py                       # the table in docs/benchmarks.md
    python bench/sampling.py --sizes 7x7 --threads 2
    python bench/sampling.py --sizes 4x4 --batch 4 --guidance-only   # a quick check
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.sampling import draw_codes, sample_cached, sample_full

ALWAYS_COMPLETE = 64  # maps with at most this many positions run the full sampler completely


@dataclass
class Run:
    seconds: float  # per batch; extrapolated when positions < total
    positions: int  # positions actually sampled
    total: int
    peak_mib: float
    codes: np.ndarray  # (B, H*W) in raster order, the first `positions` columns valid
    full_passes: int  # cached sampler: full passes run to check near-tied draws


GUIDED_CLASSES = 10


def build_prior(
    size: tuple[int, int], seed: int, kernel_size: int = PixelCNNConfig.kernel_size, guided: bool = False
) -> GatedPixelCNN:
    torch.manual_seed(seed)
    classes = dict(num_classes=GUIDED_CLASSES, label_dropout=0.1) if guided else {}
    return GatedPixelCNN(PixelCNNConfig(latent_shape=size, kernel_size=kernel_size, **classes)).eval()


def full_first_positions(model: GatedPixelCNN, n: int, positions: int, temperature, top_k, generator) -> torch.Tensor:
    """sample_full's loop, stopped after `positions` positions (same work per position)."""
    h, w = model.cfg.latent_shape
    codes = torch.zeros(n, h, w, dtype=torch.long)
    with torch.no_grad():
        for step in range(positions):
            i, j = divmod(step, w)
            codes[:, i, j] = draw_codes(model(codes)[:, :, i, j], temperature, top_k, generator)
    return codes


def run_case(sampler: str, size: tuple[int, int], args: argparse.Namespace, positions: int) -> Run:
    """Runs in a fresh process: one batch with one sampler."""
    torch.set_num_threads(args.threads)
    model = build_prior(size, args.seed, args.kernel_size)
    total = size[0] * size[1]
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    sample_cached(build_prior((1, 2), args.seed, args.kernel_size), 1)  # warm up the code paths on a tiny map
    generator = torch.Generator().manual_seed(args.seed)
    kwargs = dict(temperature=args.temperature, top_k=args.top_k, generator=generator)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if sampler == "cached":
        codes = sample_cached(model, args.batch, **kwargs)
    elif positions == total:
        codes = sample_full(model, args.batch, **kwargs)
    else:
        codes = full_first_positions(model, args.batch, positions, **kwargs)
    seconds = (time.perf_counter() - started) * total / positions
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    full_passes = len(forwards) if sampler == "cached" else positions
    return Run(seconds, positions, total, peak_mib, codes.reshape(args.batch, -1).numpy(), full_passes)


def run_guided(scale: float, size: tuple[int, int], args: argparse.Namespace) -> float:
    """Runs in a fresh process: seconds for one batch of the cached sampler at guidance ``scale``."""
    torch.set_num_threads(args.threads)
    model = build_prior(size, args.seed, args.kernel_size, guided=True)
    labels = torch.arange(args.batch) % GUIDED_CLASSES
    warm_up = build_prior((1, 2), args.seed, args.kernel_size, guided=True)
    sample_cached(warm_up, 2, labels[:2], guidance=scale)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    sample_cached(model, args.batch, labels, args.temperature, args.top_k, generator, guidance=scale)
    return time.perf_counter() - started


def in_fresh_process(*args, task=run_case):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(task, args)


def guidance_table(sizes: list[tuple[int, int]], args: argparse.Namespace) -> list[str]:
    rows = [
        f"| latent | S = 1 (s / batch) | S = {args.guidance:g} (s / batch) | guided / unguided |",
        "|---|---:|---:|---:|",
    ]
    for size in sizes:
        plain = in_fresh_process(1.0, size, args, task=run_guided)
        guided = in_fresh_process(args.guidance, size, args, task=run_guided)
        rows.append(f"| {size[0]}x{size[1]} | {plain:.2f} | {guided:.2f} | {guided / plain:.2f}x |")
        print(f"done guidance {size[0]}x{size[1]}: S=1 {plain:.2f} s, S={args.guidance:g} {guided:.2f} s", flush=True)
    return rows


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="7x7,16x16,32x32", help="latent sizes HxW, comma-separated")
    parser.add_argument("--batch", type=int, default=64, help="samples per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU is shared)")
    parser.add_argument("--full-positions", type=int, default=16, help="positions timed to estimate the full sampler")
    parser.add_argument("--full-all", action="store_true", help="run the full sampler completely at every size")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernel-size", type=int, default=PixelCNNConfig.kernel_size, help="the prior's kernel size")
    parser.add_argument("--guidance", type=float, default=2.0, help="guidance scale S timed against S = 1")
    parser.add_argument("--guidance-only", action="store_true", help="only the guidance table")
    args = parser.parse_args()
    sizes = [parse_size(text) for text in args.sizes.split(",")]

    cfg = PixelCNNConfig(kernel_size=args.kernel_size)
    print(
        f"batch {args.batch}, {cfg.num_layers} layers, {cfg.channels} channels, kernel {cfg.kernel_size}, "
        f"K={cfg.num_codes}, {args.threads} thread(s), CPU float32, seed {args.seed}",
        flush=True,
    )
    if not args.guidance_only:
        print("\n".join(sampler_table(sizes, args)))
    print("\n".join(guidance_table(sizes, args)))


def sampler_table(sizes: list[tuple[int, int]], args: argparse.Namespace) -> list[str]:
    rows = [
        "| latent | sampler | s / batch | speed-up | peak RSS growth (MiB) | codes = full | full passes | timing |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for size in sizes:
        total = size[0] * size[1]
        complete = args.full_all or total <= ALWAYS_COMPLETE
        positions = total if complete else min(args.full_positions, total)
        full = in_fresh_process("full", size, args, positions)
        cached = in_fresh_process("cached", size, args, total)
        same = np.array_equal(full.codes[:, :positions], cached.codes[:, :positions])
        match = ("yes" if same else "NO") + ("" if complete else f" (first {positions})")
        label = f"{size[0]}x{size[1]}"
        full_timing = "measured" if complete else f"estimated from {positions} of {total} positions"
        rows.append(f"| {label} | full | {full.seconds:.2f} | 1x | {full.peak_mib:.0f} | | {total} | {full_timing} |")
        rows.append(
            f"| {label} | cached | {cached.seconds:.2f} | {full.seconds / cached.seconds:.1f}x | "
            f"{cached.peak_mib:.0f} | {match} | {cached.full_passes} | measured |"
        )
        print(f"done {label}: full {full.seconds:.1f} s, cached {cached.seconds:.2f} s", flush=True)
    return rows


if __name__ == "__main__":
    main()
