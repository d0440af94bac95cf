"""MSE-only vs VQGAN-style (--gan) training of the same VQ-VAE on a procedural 32x32 RGB dataset.

Both runs share K, the latent size, the seed and the step budget; only the loss differs. Each
checkpoint is then measured by ``vqgen evaluate``'s reconstruction section on the validation
split: PSNR, SSIM, and the Fréchet distance / KID between reconstructions and originals in the
feature space of the reference classifier (trained once on the dataset, shared by both runs).
The script also checks that no logged number went NaN/Inf.

    .venv/bin/python bench/gan.py                 # 1-10 minutes on 2 CPU cores, depending on their load
    .venv/bin/python bench/gan.py --quick         # a smoke run of the whole pipeline

The dataset: each image is a two-colour linear gradient with one large shape in front (its class:
rectangle, ellipse, triangle, or a striped square) and a small distractor shape, all with hard
edges and some fine stripes, the detail an MSE-trained autoencoder blurs away.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("rectangle", "ellipse", "triangle", "stripes")


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear blend of two random colours along a random direction, (size, size, 3) uint8."""
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    t = (x * math.cos(angle) + y * math.sin(angle)).astype(np.float64)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    c0, c1 = np.array(random_colour(rng)), np.array(random_colour(rng))
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).round().astype(np.uint8)


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    colour = random_colour(rng)
    if kind == "rectangle":
        draw.rectangle(box, fill=colour, outline=random_colour(rng))
    elif kind == "ellipse":
        draw.ellipse(box, fill=colour)
    elif kind == "triangle":
        apex = (int(rng.integers(x0, x1 + 1)), y0)
        draw.polygon([apex, (x0, y1), (x1, y1)], fill=colour)
    else:  # stripes: a square of alternating colours, period 2-4 pixels, horizontal or vertical
        other, period = random_colour(rng), int(rng.integers(2, 5))
        vertical = bool(rng.integers(2))
        for offset in range(0, (x1 - x0 if vertical else y1 - y0) + 1):
            fill = colour if (offset // max(period // 2, 1)) % 2 == 0 else other
            line = (x0 + offset, y0, x0 + offset, y1) if vertical else (x0, y0 + offset, x1, y0 + offset)
            draw.line(line, fill=fill)


def random_box(rng: np.random.Generator, size: int, low: int, high: int) -> tuple[int, int, int, int]:
    w, h = (int(v) for v in rng.integers(low, high + 1, 2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    return x0, y0, x0 + w - 1, y0 + h - 1


def make_shapes_dataset(folder: Path, n: int, seed: int = 0, size: int = 32) -> Path:
    """Write ``n`` procedural RGB images as ``folder/<class>/<i>.png`` (classes in turn); returns ``folder``."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        image = Image.fromarray(gradient(rng, size))
        draw = ImageDraw.Draw(image)
        draw_shape(draw, CLASSES[int(rng.integers(len(CLASSES)))], random_box(rng, size, 4, 8), rng)
        draw_shape(draw, kind, random_box(rng, size, size // 3, size * 3 // 4), rng)
        image.save(folder / kind / f"{i:05d}.png")
    return folder


# ----------------------------------------------------------------------------- runs


# the train-vqvae defaults of the time the table in docs/benchmarks.md was measured (the defaults have changed since)
PINNED = ["--recon-loss", "mse", "--codebook-dim", "0", "--head-channels", "0", "--augment-shift", "0"]


def train(name: str, data: Path, work: Path, args: argparse.Namespace, extra: list[str]) -> tuple[Path, float]:
    out = work / f"{name}.safetensors"
    if args.reuse and out.is_file():
        print(f"reusing {out} (--reuse)", flush=True)
        last = json.loads(out.with_name(f"{name}.metrics.jsonl").read_text().splitlines()[-1])
        return out, last["elapsed_s"]
    command = [
        sys.executable, "-m", "vqgen", "train-vqvae", "--data", str(data), "--out", str(out),
        "-K", str(args.num_codes), "-D", "32", "--hidden", str(args.hidden), "--res-channels", str(args.hidden // 2),
        "--downsamples", str(args.downsamples), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr", "1e-3", "--seed", "0", "--device", "cpu", *PINNED, *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name}: train-vqvae failed:\n{done.stderr[-3000:]}")
    return out, time.time() - started


def logged_numbers_finite(checkpoint: Path) -> bool:
    log = checkpoint.with_name(f"{checkpoint.stem}.metrics.jsonl")
    for line in log.read_text().splitlines():
        for value in json.loads(line).values():
            if isinstance(value, float) and not math.isfinite(value):
                return False
    return True


def measure(checkpoint: Path, args: argparse.Namespace) -> dict:
    from vqgen.eval import EvaluateRequest, evaluate

    # KID subsets of half the validation split, so that they differ and the std means something
    request = EvaluateRequest(
        vqvae=checkpoint, device="cpu", kid_subsets=50, kid_subset_size=args.images // 20, seed=0,
        train_classifier=True,  # first run: trains the reference classifier and caches it beside the checkpoints
    )
    return evaluate(request, log=lambda text: print(f"  {text}", flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images generated (10%% held out for validation)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-codes", type=int, default=64, help="K")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--downsamples", type=int, default=2, help="2: 8x8 latents for 32x32 images")
    parser.add_argument("--gan-start", type=int, default=120)
    parser.add_argument("--gan-weight", type=float, default=0.1)
    parser.add_argument("--disc-layers", type=int, default=2)
    parser.add_argument("--disc-channels", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="keep data and checkpoints here (default: a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="measure checkpoints already in --work, train only missing ones")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.hidden, args.gan_start = 400, 1, 32, 2

    with tempfile.TemporaryDirectory(prefix="vqgen-bench-gan-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = make_shapes_dataset(work / "shapes", args.images, seed=0)
        steps = args.epochs * (args.images - args.images // 10) // args.batch_size
        print(f"dataset: {args.images} procedural 32x32 RGB images in {data}; about {steps} steps per run", flush=True)
        gan_flags = [
            "--gan", "--gan-start", str(args.gan_start), "--gan-weight", str(args.gan_weight),
            "--disc-layers", str(args.disc_layers), "--disc-channels", str(args.disc_channels),
        ]
        runs = {"mse": [], "gan": gan_flags}
        rows = []
        for name, extra in runs.items():
            checkpoint, seconds = train(name, data, work, args, extra)
            result = measure(checkpoint, args)
            rec = result["reconstruction"]
            rows.append((name, rec, seconds, logged_numbers_finite(checkpoint)))
        classifier = result["classifier"]

    print()
    print(f"K={args.num_codes}, latents {32 // 2**args.downsamples}x{32 // 2**args.downsamples}, "
          f"{args.epochs} epochs x batch {args.batch_size} (~{steps} steps), seed 0, CPU; "
          f"distances in the reference classifier's features (val accuracy {classifier['val_accuracy']:.1%})")
    header = f"| {'run':<5} | {'PSNR dB':>7} | {'SSIM':>6} | {'recon FD':>9} | {'recon KID':>18} | {'train s':>7} | finite |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, rec, seconds, finite in rows:
        finite = finite and all(math.isfinite(v) for v in rec.values() if isinstance(v, float))
        kid = f"{rec['kid_mean']:.4f} ± {rec['kid_std']:.4f}"
        print(f"| {name:<5} | {rec['psnr']:7.2f} | {rec['ssim']:6.4f} | {rec['fd']:9.3f} | {kid:>18} | "
              f"{seconds:7.0f} | {'yes' if finite else 'NO':>6} |")


if __name__ == "__main__":
    main()
