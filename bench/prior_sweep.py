"""PixelCNN recipes against sample quality: priors trained on one code file, scored at the default settings.

    python bench/prior_sweep.py --codes checkpoints/codes.safetensors     # docs/benchmarks.md's table (75 minutes)
    python bench/prior_sweep.py --out bench-out/wide --variant "default=" --variant "10x80=--layers 10 --channels 80"
    python bench/prior_sweep.py --codes checkpoints/codes.safetensors --out bench-out/half \\
        --fraction 0.5 --variant "half, 24 epochs=--epochs 24"

Each ``--variant "NAME=FLAGS"`` runs ``vqgen train-prior CODES FLAGS`` (a subprocess, so FLAGS read as on the
command line and the time is the command's own), then draws 1,000 class-conditional samples (100 per class,
cached sampler) at the default sampling settings for each ``--seeds`` seed and scores them with ``vqgen
evaluate`` against the training images, as ``bench/samples.py`` does. ``--fraction F`` keeps that share of the
training images (with all the shifted copies ``extract-codes`` made of them; the same images for every
variant), to show how sample quality grows with the data. Each row: training seconds, best validation bits
per code and the bits learned beyond the code histogram, then the means over the seeds of the share in the
asked class, the Fréchet distance (beside its real-vs-real floor) and recall (beside its floor).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.config import ClassifierTrainOptions
from vqgen.data import image_data_from_spec
from vqgen.eval import EvaluateRequest, evaluate
from vqgen.stages.sample import run as sample
from vqgen.train.classifier import train_classifier

# the rows of the docs/benchmarks.md table that use every training image of the given codes
DEFAULT_VARIANTS = (
    "default=", "default, --seed 1=--seed 1", "default, --seed 2=--seed 2", "10x80=--layers 10 --channels 80",
    "8x96, 10 epochs=--layers 8 --channels 96 --epochs 10", "kernel 5, 8 layers=--kernel-size 5 --layers 8",
    "dropout 0.2=--dropout 0.2", "label dropout 0.05=--label-dropout 0.05", "label dropout 0.2=--label-dropout 0.2",
    "16 epochs=--epochs 16", "attention=--attention-heads 4", "attention, --seed 1=--attention-heads 4 --seed 1",
    "96 channels, 24 epochs=--channels 96 --epochs 24",
)
COLUMNS = ("variant", "train s", "val bits/code", "learned bits", "in class", "FD", "FD floor", "recall",
           "recall floor", "seeds")


def keep_images(codes: Path, fraction: float, out: Path) -> Path:
    """A code file with ``fraction`` of the training images (each with all its copies), drawn with seed 0."""
    tensors, meta = load_vqgen_file(codes, "codes")
    images = (meta.get("augment") or {}).get("num_train_images", len(tensors["train_codes"]))
    variants = len(tensors["train_codes"]) // images
    kept = torch.randperm(images, generator=torch.Generator().manual_seed(0))[: round(images * fraction)].sort().values
    rows = torch.cat([kept + v * images for v in range(variants)])
    tensors = {**tensors, "train_codes": tensors["train_codes"][rows], "train_labels": tensors["train_labels"][rows]}
    meta = {**meta, "num_train": len(rows)}
    if meta.get("augment"):
        meta["augment"] = {**meta["augment"], "num_train_images": len(kept)}
    save_vqgen_file(out, tensors, meta)
    return out


def train(codes: Path, flags: str, folder: Path) -> dict[str, float]:
    """Run train-prior with ``flags``; its seconds and the last epoch's metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    prior = folder / "prior.safetensors"
    command = [sys.executable, "-m", "vqgen", "train-prior", str(codes), "--out", str(prior), *shlex.split(flags)]
    started = time.perf_counter()
    with open(folder / "train.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - started
    last = json.loads((folder / "prior.metrics.jsonl").read_text().splitlines()[-1])
    return {"train_s": seconds, "bits": last["best_val_bits_per_code"], "histogram": last["histogram_bits_per_code"]}


def score(prior: Path, classifier: Path, seed: int, folder: Path) -> dict[str, float]:
    """1,000 samples at the default sampling settings, scored against the training images."""
    samples = folder / f"samples-seed{seed}"
    sample(prior, samples, 1000, label="all", seed=seed, batch_size=250, device="cpu")
    return evaluate(EvaluateRequest(samples=samples, prior=prior, classifier=classifier, split="train",
                                    device="cpu"))["samples"]


def row(name: str, trained: dict[str, float], scores: list[dict[str, float]]) -> str:
    def mean(key: str) -> float:
        return statistics.mean(s[key] for s in scores)

    learned = trained["histogram"] - trained["bits"]
    cells = [name, f"{trained['train_s']:.0f}", f"{trained['bits']:.3f}", f"{learned:.2f}",
             f"{mean('class_agreement'):.1%}", f"{mean('fd'):.2f}", f"{mean('floor_fd'):.2f}",
             f"{mean('recall'):.3f}", f"{mean('floor_recall'):.3f}", str(len(scores))]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=Path, default=Path("checkpoints/codes.safetensors"))
    parser.add_argument("--out", type=Path, default=Path("bench-out/prior-sweep"),
                        help="work folder (priors, samples, classifier)")
    parser.add_argument("--variant", action="append", help='"NAME=train-prior flags" (repeatable); default: the '
                        "docs/benchmarks.md table's rows on all the images")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the training images to keep")
    parser.add_argument("--seeds", default="0,1", help="sampling seeds, comma-separated")
    parser.add_argument("--classifier", type=Path, help="reference classifier to score with; default: train one "
                        "(`train-classifier`'s defaults) into --out")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], not {args.fraction}")
    args.out.mkdir(parents=True, exist_ok=True)
    codes = args.codes if args.fraction == 1 else keep_images(args.codes, args.fraction, args.out / "codes.safetensors")
    classifier = args.classifier or args.out / "classifier.safetensors"
    if not classifier.exists():
        _, meta = load_vqgen_file(args.codes, "codes")
        train_classifier(image_data_from_spec(meta["dataset"]), ClassifierTrainOptions(device="cpu"), classifier)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * (len(COLUMNS) - 1), flush=True)
    for spec in args.variant or DEFAULT_VARIANTS:
        name, _, flags = spec.partition("=")
        folder = args.out / name.replace(" ", "_").replace(",", "")
        trained = train(codes, flags, folder)
        print(row(name, trained, [score(folder / "prior.safetensors", classifier, s, folder) for s in seeds]),
              flush=True)


if __name__ == "__main__":
    main()
