"""Sample quality against the sampling settings: guidance x top-k x temperature, fidelity and diversity apart.

    python bench/samples.py --prior checkpoints/prior.safetensors          # the demo's models
    python bench/samples.py --prior mnist5k                                # the shipped models
    python bench/samples.py --prior mnist5k --guidance 1,3 --top-k none --temperature 1 --n 200   # a quick look

Each row draws ``--n`` class-conditional samples (the same number of every class, cached sampler,
``--seed``, default 0; another seed shows a row's noise), writes them to a scratch folder and scores
them with ``vqgen evaluate`` against the real images of ``--split`` (default the training split: 4,500
images on mnist5k, so that the real-vs-real floor is measured at the same count as the samples): the
share the reference classifier puts in the asked class, its mean confidence there, the Fréchet
distance and KID in the classifier's features beside their real-vs-real floor, precision and recall
(k = 3), the normalised entropy of the predicted classes, and seconds per 1,000 samples. Below the
table: the share of real validation images the same classifier puts in their class (the ceiling of
the in-class share).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from vqgen.eval import EvaluateRequest, evaluate
from vqgen.pretrained import resolve
from vqgen.stages.sample import run as sample

COLUMNS = ("guidance", "top-k", "temp", "in class", "confidence", "FD", "FD floor", "KID", "KID floor",
           "precision", "recall", "recall floor", "class entropy", "s / 1k")


def parse_list(text: str, cast) -> list:
    return [None if item == "none" else cast(item) for item in text.split(",")]


def score_row(prior: Path, guidance: float, top_k: int | None, temperature: float, args,
              scratch: Path) -> tuple[list[str], float]:
    """One row of the table, and the reference classifier's accuracy on real validation images."""
    folder = scratch / f"g{guidance}-k{top_k}-t{temperature}"
    started = time.perf_counter()
    sample(prior, folder, args.n, label="all", temperature=temperature, top_k=top_k, guidance=guidance,
           seed=args.seed, batch_size=args.batch_size, device="cpu")
    seconds = (time.perf_counter() - started) * 1000 / args.n
    results = evaluate(EvaluateRequest(samples=folder, prior=prior, split=args.split, device="cpu",
                                       train_classifier=True))
    s = results["samples"]
    row = [
        f"{guidance:g}", str(top_k or "none"), f"{temperature:g}", f"{s['class_agreement']:.1%}",
        f"{s['confidence']:.3f}", f"{s['fd']:.2f}", f"{s['floor_fd']:.2f}", f"{s['kid_mean']:.3f}",
        f"{s['floor_kid_mean']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['floor_recall']:.3f}",
        f"{s['class_entropy']:.3f}", f"{seconds:.1f}",
    ]
    return row, results["classifier"]["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="checkpoints/prior.safetensors", help="a prior file or a shipped name")
    parser.add_argument("--guidance", default="1,1.5,2,3,5")
    parser.add_argument("--top-k", default="none,50")
    parser.add_argument("--temperature", default="1,0.8")
    parser.add_argument("--n", type=int, default=1000, help="samples per row (spread over the classes)")
    parser.add_argument("--split", default="train", help="real images to compare with")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (another seed shows the rows' noise)")
    args = parser.parse_args()
    prior = resolve(args.prior, "prior")
    grid = itertools.product(parse_list(args.guidance, float), parse_list(args.top_k, int),
                             parse_list(args.temperature, float))
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * 3 + "---:|" * (len(COLUMNS) - 3), flush=True)
    with tempfile.TemporaryDirectory(prefix="vqgen-bench-samples-") as scratch:
        for guidance, top_k, temperature in grid:
            row, accuracy = score_row(prior, guidance, top_k, temperature, args, Path(scratch))
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"reference classifier: {accuracy:.1%} of the real validation images in their class")


if __name__ == "__main__":
    main()
