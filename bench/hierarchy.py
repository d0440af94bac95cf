"""One code map against two (VQ-VAE-2) on 5,000 CIFAR-10 images, at 32x32 and upsampled to 64x64.

Both models of a size get the same bit budget and the same training time:

* one level: the f=4 map (8x8 at 32 px, 16x16 at 64 px) of K=1024 codes: 64 x 10 = 640 bits per 32x32 image;
* two levels: the same bottom map and a top map 2x smaller, K=256 codes each: (64 + 16) x 8 = 640 bits;
* each VQ-VAE trains for ``--minutes`` of wall time: a probe epoch measures its seconds per epoch and
  sets its ``--epochs`` (so the bigger two-level network gets fewer epochs); ``--epochs N`` instead
  gives both N epochs.

Each then gets a class-conditional prior (same options and epochs), ``--samples`` samples spread over
the classes, and ``vqgen.eval``'s numbers on the validation split (500 images): PSNR, SSIM and the
reconstruction Fréchet distance; the prior's bits per image; the samples' Fréchet distance beside its
real-vs-real floor and their share in the asked class, in the features of a reference classifier
trained once per size on the same images.

    .venv/bin/python bench/hierarchy.py --npz CIFAR_NPZ --quick    # a smoke run on 400 images (a few minutes)
    .venv/bin/python bench/hierarchy.py --npz CIFAR_NPZ            # the table (docs/benchmarks.md: run time)
    .venv/bin/python bench/hierarchy.py --npz CIFAR_NPZ --sample-speed --sizes 64   # `vqgen sample --n 64`

--sample-speed trains each model for one epoch on 10 images per class (sampling time does not depend on
the weights) and times `vqgen sample --n 64` with the default cached samplers, start-up included.

The images come from ``--npz PATH`` (not shipped: a CIFAR-10 subset with arrays ``images`` (N, 32, 32, 3)
uint8 and ``labels`` (N,)), written once into a folder of PNGs per size (bicubic upsampling for 64);
the package reads such folders and does not depend on the file.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NPZ_HELP = "an .npz of CIFAR-10 images, arrays images (N, 32, 32, 3) uint8 and labels (N,)"
RUNS = {"one level": (1, 1024), "two levels": (2, 256)}  # levels, K: the same bits per image


def write_folder(npz: Path, folder: Path, size: int, limit: int | None) -> Path:
    """The npz's images (the first ``limit`` of each class) as folder/<class>/<i>.png at ``size`` px."""
    data = np.load(npz)
    images, labels = data["images"], data["labels"]
    keep = [i for c in range(len(CLASSES)) for i in np.flatnonzero(labels == c)[:limit]]
    if folder.is_dir() and len(list(folder.rglob("*.png"))) == len(keep):
        return folder
    for c in CLASSES:
        (folder / c).mkdir(parents=True, exist_ok=True)
    for i in keep:
        image = Image.fromarray(images[i])
        if size != image.width:
            image = image.resize((size, size), Image.BICUBIC)
        image.save(folder / CLASSES[labels[i]] / f"{i:05d}.png")
    return folder


def vqgen(*args: object) -> float:
    """Run one vqgen command; return its wall time in seconds."""
    command = [sys.executable, "-m", "vqgen", *map(str, args)]
    print("$ vqgen", " ".join(map(str, args)), flush=True)
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"vqgen {args[0]} failed:\n{done.stderr[-3000:]}")
    return time.time() - started


def last_record(checkpoint: Path) -> dict:
    return json.loads(checkpoint.with_name(f"{checkpoint.stem}.metrics.jsonl").read_text().splitlines()[-1])


def picked_runs(levels: str) -> dict[str, tuple[int, int]]:
    """The RUNS asked for by --levels ("1,2", "1" or "2")."""
    wanted = {int(n) for n in levels.split(",")}
    return {name: run for name, run in RUNS.items() if run[0] in wanted}


def vqvae_epochs(name: str, flags: list[str], work: Path, args: argparse.Namespace) -> int:
    """--epochs N, or as many epochs as fit in --minutes, from a probe epoch's time."""
    if args.epochs is not None:
        return args.epochs
    probe = work / "probe" / f"{name}.safetensors"
    vqgen("train-vqvae", *flags, "--out", probe, "--epochs", 1)
    seconds = last_record(probe)["elapsed_s"]
    epochs = max(1, math.floor(args.minutes * 60 / seconds))
    print(f"  {name}: {seconds:.1f} s per epoch -> {epochs} epochs in {args.minutes:g} minutes", flush=True)
    return epochs


def run(name: str, levels: int, k: int, folder: Path, work: Path, args: argparse.Namespace) -> dict:
    """Train, encode, fit the prior and sample for one model; returns its files and seconds."""
    paths = {part: work / f"{part}.safetensors" for part in ("vqvae", "codes", "prior")}
    paths["samples"] = work / "samples"
    device = ["--device", args.device]
    flags = ["--data", folder, "-K", k, "--levels", levels, "--seed", 0, *device, *shlex.split(args.vqvae_args)]
    epochs = vqvae_epochs(name, flags, work, args)
    seconds = {"vqvae": vqgen("train-vqvae", *flags, "--out", paths["vqvae"], "--epochs", epochs)}
    vqgen("extract-codes", paths["vqvae"], "--out", paths["codes"], *device)
    seconds["prior"] = vqgen("train-prior", paths["codes"], "--out", paths["prior"], "--epochs", args.prior_epochs,
                             *device, *shlex.split(args.prior_args))
    seconds["sample"] = vqgen("sample", paths["prior"], "--out", paths["samples"], "--n", args.samples, *device)
    return {"paths": paths, "seconds": seconds, "epochs": epochs}


def measure(paths: dict[str, Path], classifier: Path, args: argparse.Namespace) -> dict:
    from vqgen.eval import EvaluateRequest, evaluate

    request = EvaluateRequest(
        vqvae=paths["vqvae"], codes=paths["codes"], prior=paths["prior"], samples=paths["samples"],
        classifier=classifier, device=args.device, kid_subsets=20, seed=0,
    )
    return evaluate(request, log=lambda text: print(f"  {text}", flush=True))


def map_shapes(meta: dict) -> list[list[int]]:
    """The code maps a code file records: [top, bottom], or [the one map]."""
    return ([meta["latent_shape_top"]] if meta.get("levels", 1) == 2 else []) + [meta["latent_shape"]]


def table_row(size: int, name: str, k: int, result: dict, done: dict) -> str:
    from vqgen.formats.files import read_metadata

    meta = read_metadata(done["paths"]["codes"])
    shapes = map_shapes(meta)
    maps = " + ".join(f"{h}x{w}" for h, w in shapes)
    bits = sum(h * w for h, w in shapes) * math.log2(k)
    rec, prior, samples = result["reconstruction"], result["prior"], result["samples"]
    s = done["seconds"]
    return (f"| {size} | {name} | {maps} | {k} | {bits:.0f} | {done['epochs']} | {s['vqvae']:.0f} | "
            f"{rec['psnr']:.2f} | {rec['ssim']:.4f} | {rec['fd']:.2f} | {prior['bits_per_image']:.0f} | "
            f"{samples['fd']:.2f} ({samples['floor_fd']:.2f}) | {samples.get('class_agreement', float('nan')):.1%} | "
            f"{s['prior']:.0f} | {s['sample']:.0f} |")


HEADER = ("| px | model | maps | K | code bits | epochs | train s | PSNR dB | SSIM | recon FD | prior bits/image | "
          "sample FD (floor) | in class | prior s | sample s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npz", type=Path, help=f"{NPZ_HELP} (required)")
    parser.add_argument("--sizes", default="32,64", help="image sizes, comma separated")
    parser.add_argument("--minutes", type=float, default=15.0, help="wall time of each VQ-VAE's training")
    parser.add_argument("--epochs", type=int, default=None, help="instead of --minutes: this many epochs for both")
    parser.add_argument("--levels", default="1,2", help="which models: 1 (one level), 2 (two levels) or both")
    parser.add_argument("--prior-epochs", type=int, default=12)
    parser.add_argument("--samples", type=int, default=250, help="samples per model (the floor's size: half the val split)")
    parser.add_argument("--vqvae-args", default="", help='more train-vqvae flags for both, e.g. "--channel-mult 1,2,2 --norm group"')
    parser.add_argument("--prior-args", default="", help="more train-prior flags for both")
    parser.add_argument("--per-class", type=int, default=None, help="use only this many images per class")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("bench-hierarchy"), help="data, checkpoints and samples")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 images per class, tiny networks")
    parser.add_argument("--sample-speed", action="store_true", help="only time `vqgen sample --n 64` (see above)")
    args = parser.parse_args()
    if args.npz is None or not args.npz.is_file():
        missing = "" if args.npz is None else f" ({args.npz} does not exist)"
        sys.exit(f"error: bench/hierarchy.py needs --npz PATH{missing}: {NPZ_HELP}")
    if args.sample_speed:
        return sample_speed(args)
    if args.quick:
        args.per_class, args.minutes, args.prior_epochs, args.samples = 40, 0.05, 1, 20
        args.vqvae_args += " --hidden 16 --res-channels 8 -D 16 --batch-size 32"
        args.prior_args += " --layers 3 --channels 16 --batch-size 32"

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        folder = write_folder(args.npz, args.work / f"cifar10_5k_{size}", size, args.per_class)
        classifier = args.work / f"classifier-{size}.safetensors"
        if not classifier.is_file():
            vqgen("train-classifier", "--data", folder, "--out", classifier, "--device", args.device)
        for name, (levels, k) in picked_runs(args.levels).items():
            done = run(name, levels, k, folder, args.work / f"{size}px-{levels}-level", args)
            rows.append(table_row(size, name, k, measure(done["paths"], classifier, args), done))
            print(rows[-1], flush=True)

    budget = f"{args.epochs} epochs each" if args.epochs is not None else f"{args.minutes:g} minutes of training each"
    print(f"\nVQ-VAEs: {budget}, seed 0, device {args.device}; priors: {args.prior_epochs} epochs; "
          f"{args.samples} samples each; distances in the reference classifier's features, validation split")
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    print("\n".join(rows))


def sample_speed(args: argparse.Namespace) -> None:
    """Wall seconds of `vqgen sample --n 64` (start-up included) for one and two levels at each size."""
    from vqgen.formats.files import read_metadata

    args.per_class, args.epochs, args.prior_epochs, args.samples = 10, 1, 1, 64
    lines = ["| px | model | maps | sample 64 images (s) |", "|---|---|---|---:|"]
    for size in (int(s) for s in args.sizes.split(",")):
        folder = write_folder(args.npz, args.work / f"cifar10_5k_{size}_speed", size, args.per_class)
        for name, (levels, k) in RUNS.items():
            done = run(name, levels, k, folder, args.work / f"speed-{size}px-{levels}-level", args)
            maps = " + ".join(f"{h}x{w}" for h, w in map_shapes(read_metadata(done["paths"]["codes"])))
            lines.append(f"| {size} | {name} | {maps} | {done['seconds']['sample']:.1f} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
