"""Colour photos end to end: the whole pipeline on a folder of 32 px photos, judged by its samples.

    python bench/photos.py prepare --npz ../shared/data/cifar10_5k.npz --out data/cifar10_5k
    python bench/photos.py run --data data/cifar10_5k --work checkpoints/photos/defaults
    python bench/photos.py run --data data/cifar10_5k --work checkpoints/photos/no-flip --vqvae-args "--no-flip" --extract-args "--no-flip"
    python bench/photos.py score --prior checkpoints/photos/defaults/prior.safetensors --guidance 1.6,3,5
    python bench/photos.py score --prior MASKED.safetensors --guidance 4 --steps 8 --choice-temperature 1000

``prepare`` writes the npz (``images`` (N, H, W, 3) uint8, ``labels`` (N,)) as one folder per class,
which the pipeline splits 90/10 (4,500 train / 500 validation images for cifar10_5k).

``run`` trains a recipe, the defaults plus ``--vqvae-args``, ``--extract-args`` and ``--prior-args``,
each stage by the CLI in its own process (``--reuse-vqvae`` skips the first), timing every stage; then
scores it as ``score`` does. ``score`` draws ``--n`` class-conditional samples of a prior (the same number
of every class) for each sampling setting and prints one row each: the share the reference classifier
puts in the asked class, that share over the classifier's accuracy on real validation images (its
ceiling), the share it classifies with confidence >= 0.9 beside that of real validation images, the
Fréchet distance and recall in the classifier's features against their real-vs-real floors,
precision, and the normalised entropy of the predicted classes. The reference classifier is the one
`vqgen evaluate` trains on the same train split (cached beside the prior). Every row also goes to
``WORK/rows.jsonl`` (``score``: beside the prior).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vqgen.data import image_data_from_spec
from vqgen.data.batches import make_loader
from vqgen.eval import EvaluateRequest, evaluate
from vqgen.formats.checkpoints import load_classifier
from vqgen.formats.files import read_metadata
from vqgen.stages.sample import run as sample

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CONFIDENT = 0.9
COLUMNS = ("recipe", "S", "T", "in class", "of ceiling", "confident", "FD", "FD / floor", "precision",
           "recall", "recall floor", "class entropy")


def prepare(npz: Path, out: Path) -> None:
    from PIL import Image

    arrays = np.load(npz)
    images, labels = arrays["images"], arrays["labels"]
    names = CIFAR10_NAMES if int(labels.max()) < len(CIFAR10_NAMES) else [str(i) for i in range(int(labels.max()) + 1)]
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = out / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    print(f"{len(images)} images in {len(set(labels.tolist()))} class folders under {out}")


def stage(name: str, args: list[str]) -> float:
    """Run ``vqgen NAME ARGS`` in its own process; its seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vqgen", name, *args], check=True)
    return time.perf_counter() - started


def train_recipe(args) -> tuple[Path, dict[str, float]]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    vqvae = Path(args.reuse_vqvae) if args.reuse_vqvae else work / "vqvae.safetensors"
    if not args.reuse_vqvae:
        seconds["train-vqvae"] = stage("train-vqvae", ["--data", args.data, "--seed", str(args.seed), "--out",
                                                       str(vqvae), *shlex.split(args.vqvae_args)])
    codes, prior = work / "codes.safetensors", work / "prior.safetensors"
    seconds["extract-codes"] = stage("extract-codes", [str(vqvae), "--out", str(codes),
                                                       *shlex.split(args.extract_args)])
    seconds["train-prior"] = stage("train-prior", [str(codes), "--seed", str(args.seed), "--out",
                                                   str(prior), *shlex.split(args.prior_args)])
    return prior, seconds


@torch.no_grad()
def real_val_scores(classifier_path: Path, data_spec: dict) -> dict[str, float]:
    """The reference classifier on real validation images: accuracy and share classified with confidence >= 0.9."""
    model, _ = load_classifier(classifier_path)
    data = image_data_from_spec(data_spec)
    probs, labels = [], []
    for images, y in make_loader(data.val, 250, shuffle=False, seed=0):
        probs.append(model(images).softmax(1))
        labels.append(torch.as_tensor(y))
    p, y = torch.cat(probs), torch.cat(labels)
    return {"accuracy": float((p.argmax(1) == y).double().mean()),
            "confident": float((p.max(1).values >= CONFIDENT).double().mean())}


def sampling_options(args) -> dict[str, float]:
    """The decoding options given for a masked prior or residual VQ codes (the sampling defaults otherwise)."""
    given = {"steps": args.steps, "choice_temperature": args.choice_temperature,
             "residual_temperature": args.residual_temperature}
    return {name: value for name, value in given.items() if value is not None}


def score(prior: Path, recipe: str, args, log: Path) -> None:
    grid = itertools.product([float(s) for s in args.guidance.split(",")],
                             [None if t == "prior" else float(t) for t in args.temperature.split(",")])
    print("| " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * (len(COLUMNS) - 1), flush=True)
    with tempfile.TemporaryDirectory(prefix="vqgen-bench-photos-") as scratch:
        for guidance, temperature in grid:
            folder = Path(scratch) / f"s{guidance}-t{temperature}"
            started = time.perf_counter()
            drawn = sample(prior, folder, args.n, label="all", temperature=temperature, guidance=guidance,
                           seed=args.sample_seed, batch_size=250, device="cpu", **sampling_options(args))
            temperature = drawn["temperature"]  # the prior's own where --temperature says prior
            sample_s = time.perf_counter() - started
            results = evaluate(EvaluateRequest(samples=folder, prior=prior, split="train", device="cpu",
                                               classifier=args.classifier, train_classifier=True))
            s, c = results["samples"], results["classifier"]
            real = real_val_scores(Path(c["path"]), results["dataset"])
            confident = confident_share(folder, Path(c["path"]))
            row = {"recipe": recipe, "guidance": guidance, "temperature": temperature, "seed": args.sample_seed,
                   "in_class": s["class_agreement"], "ceiling": real["accuracy"], "confident": confident,
                   "real_confident": real["confident"], "fd": s["fd"], "fd_floor": s["floor_fd"],
                   "precision": s["precision"], "recall": s["recall"], "recall_floor": s["floor_recall"],
                   "class_entropy": s["class_entropy"], "sample_seconds": sample_s, **sampling_options(args)}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print("| " + " | ".join([
                recipe, f"{guidance:g}", f"{temperature:g}", f"{row['in_class']:.1%}",
                f"{row['in_class'] / row['ceiling']:.2f}", f"{confident:.1%} ({real['confident']:.1%})",
                f"{s['fd']:.2f}", f"{s['fd'] / s['floor_fd']:.1f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                f"{s['floor_recall']:.3f}", f"{s['class_entropy']:.3f}"]) + " |", flush=True)
    print(f"ceiling: the reference classifier puts {real['accuracy']:.1%} of real validation images in their "
          f"class, {real['confident']:.1%} with confidence >= {CONFIDENT}")


@torch.no_grad()
def confident_share(folder: Path, classifier_path: Path) -> float:
    from vqgen.formats.samples import load_sample_images

    model, meta = load_classifier(classifier_path)
    images, _ = load_sample_images(folder, meta["config"]["in_channels"], tuple(meta["config"]["image_size"]))
    top = torch.cat([model(batch).softmax(1).max(1).values for batch in images.split(250)])
    return float((top >= CONFIDENT).double().mean())


def summary(prior: Path, seconds: dict[str, float]) -> dict:
    prior_meta = read_metadata(prior)
    vqvae_meta = read_metadata(Path(prior_meta["vqvae_path"]))
    metrics = vqvae_meta.get("metrics", {})
    return {"seconds": {k: round(v, 1) for k, v in seconds.items()},
            "training_seconds": round(sum(v for k, v in seconds.items()), 1),
            "val_psnr": metrics.get("val_psnr"), "codes_used": metrics.get("val_codes_used"),
            "bits_per_code": prior_meta.get("metrics", {}).get("val_bits_per_code")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="write an npz of photos as class folders")
    p.add_argument("--npz", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    for name in ("run", "score"):
        c = commands.add_parser(name)
        c.add_argument("--guidance", default="3,4,5", help="guidance scales to score, comma-separated")
        c.add_argument("--temperature", default="prior",
                       help="temperatures to score, comma-separated (prior: the one the prior records for guidance)")
        c.add_argument("--steps", type=int, default=None, help="decoding steps (a masked prior)")
        c.add_argument("--choice-temperature", type=float, default=None, help="choice temperature (a masked prior)")
        c.add_argument("--residual-temperature", type=float, default=None,
                       help="temperature of the finer codes (residual VQ); default: the prior's")
        c.add_argument("--n", type=int, default=1000, help="samples per row (spread over the classes)")
        c.add_argument("--sample-seed", type=int, default=0)
        c.add_argument("--name", default=None, help="the recipe's name in the table; default: the folder's")
        c.add_argument("--classifier", type=Path, default=None,
                       help="reference classifier file, trained there when missing (share one between recipes); "
                            "default: evaluate's cache beside the prior")
        if name == "score":
            c.add_argument("--prior", type=Path, required=True)
            continue
        c.add_argument("--data", required=True, help="the folder of photos (class subfolders)")
        c.add_argument("--work", required=True, help="folder for the recipe's files")
        c.add_argument("--seed", type=int, default=0, help="training seed of every stage")
        c.add_argument("--reuse-vqvae", default=None, help="a trained VQ-VAE: skip stage 1")
        c.add_argument("--vqvae-args", default="", help="extra train-vqvae options")
        c.add_argument("--extract-args", default="", help="extra extract-codes options")
        c.add_argument("--prior-args", default="", help="extra train-prior options")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.npz, args.out)
        return
    if args.command == "run":
        prior, seconds = train_recipe(args)
        recipe = args.name or Path(args.work).name
        facts = {"recipe": recipe, "seed": args.seed, **summary(prior, seconds)}
        with (Path(args.work) / "rows.jsonl").open("a") as f:
            f.write(json.dumps(facts) + "\n")
        print(json.dumps(facts))
    else:
        prior = args.prior
        recipe = args.name or prior.parent.name
    score(prior, recipe, args, prior.parent / "rows.jsonl")


if __name__ == "__main__":
    main()
