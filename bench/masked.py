"""The masked prior (MaskGIT) against the PixelCNN: sample quality at --steps 4, 8, 12, 16, and sampling time.

    python bench/masked.py quality --codes checkpoints/codes.safetensors --work bench-masked/
    python bench/masked.py quality --codes ... --work ... --pixelcnn P.safetensors --masked M.safetensors
    python bench/masked.py quality --codes ... --work ... --rows pixelcnn    # one row (rows can run side by side)
    python bench/masked.py quality --codes ... --masked M.safetensors --rows 8,12 --choice-temperature 1000
    python bench/masked.py timing --maps 16,32 --n 64

``quality`` trains a PixelCNN and a masked prior on the code file at their defaults, for ``--epochs`` each
(default: each prior's own, 12 for the PixelCNN and 21 for the masked prior; both training times are
shown), unless given or already in the work folder,
then draws ``--n`` class-conditional samples (label all, the sampling defaults, seed 0) from the
PixelCNN (row ``pixelcnn``) and from the masked prior at each of ``--steps`` (rows 4, 8, ...), and scores
them as bench/samples.py does, with ``vqgen evaluate`` against the real images of the training split:
the share the reference classifier puts in the asked class, the Fréchet distance in its features beside
the real-vs-real floor, and recall (k = 3) beside its floor. ``--classifier`` names the reference
classifier (default: train one and cache it in the work folder).

``timing`` draws ``--n`` unconditional maps of each size in ``--maps`` (K = 512) from untrained priors at
their default sizes, the PixelCNN with the cached sampler and the masked prior at each of ``--steps``,
in one batch on one thread, and gives CPU seconds (process time, so that other work on the machine does
not count) scaled to 1,000 maps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vqgen.config import MaskedConfig, PixelCNNConfig, PriorTrainOptions
from vqgen.eval import EvaluateRequest, evaluate
from vqgen.formats.files import load_vqgen_file
from vqgen.models import build_prior
from vqgen.sampling import sample_cached, sample_masked
from vqgen.stages import train_prior
from vqgen.stages.sample import run as sample

QUALITY = ("prior", "steps", "epochs", "train s", "in class", "FD", "FD floor", "recall", "recall floor",
           "sample s / 1k")
TIMING = ("map", "prior", "steps", "CPU s / 1k maps", "speed-up")


def table(columns: tuple[str, ...]) -> None:
    print("| " + " | ".join(columns) + " |\n|" + "---|" * 3 + "---:|" * (len(columns) - 3), flush=True)


def row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def trained_prior(given: str | None, codes: Path, config, out: Path, epochs: int) -> Path:
    """The prior file: ``given``, or one trained at the defaults for ``epochs`` into ``out``."""
    if given:
        return Path(given)
    if not out.is_file():
        train_prior.run(codes, config, PriorTrainOptions(epochs=epochs), out)
    return out


def training(prior: Path) -> tuple[str, str]:
    """Epochs and wall seconds of a prior's training, from the metrics its file keeps."""
    metrics = load_vqgen_file(prior)[1]["metrics"]
    return str(metrics["epoch"]), f"{metrics['elapsed_s']:.0f}"


def score(prior: Path, folder: Path, args, **options) -> list[str]:
    """Sample, time and evaluate one row: in class, FD, its floor, recall, its floor, seconds per 1,000."""
    started = time.perf_counter()
    sample(prior, folder, args.n, label="all", seed=0, batch_size=args.batch_size, device="cpu", **options)
    seconds = (time.perf_counter() - started) * 1000 / args.n
    request = EvaluateRequest(samples=folder, prior=prior, split="train", device="cpu", train_classifier=True,
                              classifier=Path(args.classifier) if args.classifier else None)
    s = evaluate(request)["samples"]
    return [f"{s['class_agreement']:.1%}", f"{s['fd']:.2f}", f"{s['floor_fd']:.2f}", f"{s['recall']:.3f}",
            f"{s['floor_recall']:.3f}", f"{seconds:.1f}"]


def quality(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = args.rows.split(",") if args.rows else ["pixelcnn", *map(str, args.steps)]
    table(QUALITY)
    if "pixelcnn" in rows:
        pixelcnn = trained_prior(args.pixelcnn, Path(args.codes), PixelCNNConfig(), work / "pixelcnn.safetensors",
                                 args.epochs)
        height, width = load_vqgen_file(pixelcnn)[1]["config"]["latent_shape"]
        row(["PixelCNN (cached)", str(height * width), *training(pixelcnn),
             *score(pixelcnn, work / "samples-pixelcnn", args)])
    steps = [int(r) for r in rows if r != "pixelcnn"]
    if steps:
        masked = trained_prior(args.masked, Path(args.codes), MaskedConfig(), work / "masked.safetensors", args.epochs)
    for count in steps:
        chosen = {} if args.choice_temperature is None else {"choice_temperature": args.choice_temperature}
        cells = score(masked, work / f"samples-masked-{count}", args, steps=count, **chosen)
        row(["masked", str(count), *training(masked), *cells])


def cpu_seconds(draw) -> float:
    started = time.process_time()
    draw()
    return time.process_time() - started


def timing(args) -> None:
    torch.set_num_threads(1)
    table(TIMING)
    for side in args.maps:
        shape = (side, side)
        pixelcnn = build_prior(PixelCNNConfig(num_codes=512, latent_shape=shape).sized()).eval()
        masked = build_prior(MaskedConfig(num_codes=512, latent_shape=shape)).eval()
        generator = torch.Generator().manual_seed(0)
        per_1k = 1000 / args.n
        base = cpu_seconds(lambda: sample_cached(pixelcnn, args.n, generator=generator)) * per_1k
        row([f"{side}x{side}", f"PixelCNN ({pixelcnn.cfg.num_layers} layers), cached", str(side * side),
             f"{base:.1f}", "1.0x"])
        for steps in args.steps:
            seconds = cpu_seconds(lambda: sample_masked(masked, args.n, generator=generator, steps=steps)) * per_1k
            row([f"{side}x{side}", "masked", str(steps), f"{seconds:.1f}", f"{base / seconds:.1f}x"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    q = parts.add_parser("quality", help="sample quality of both priors on a code file")
    q.add_argument("--codes", required=True, help="code file (extract-codes)")
    q.add_argument("--work", default="bench-masked", help="folder for the trained priors and the samples")
    q.add_argument("--pixelcnn", help="a trained PixelCNN prior (default: train one at the defaults)")
    q.add_argument("--masked", help="a trained masked prior (default: train one at the defaults)")
    q.add_argument("--classifier", help="reference classifier for evaluate (default: trained and cached)")
    q.add_argument("--n", type=int, default=1000, help="samples per row (spread over the classes)")
    q.add_argument("--batch-size", type=int, default=250)
    q.add_argument("--epochs", type=int, default=None, help="epochs of each prior it trains (default: each prior's own)")
    q.add_argument("--choice-temperature", type=float, default=None,
                   help="the masked rows' choice temperature (default: the sampling default)")
    q.add_argument("--rows", help="comma-separated rows to compute: pixelcnn and/or step counts (default: all)")
    t = parts.add_parser("timing", help="CPU seconds of sampling 1,000 maps, untrained priors")
    t.add_argument("--maps", type=lambda text: [int(x) for x in text.split(",")], default=[16, 32])
    t.add_argument("--n", type=int, default=64, help="maps drawn (in one batch) per row")
    for part in (q, t):
        part.add_argument("--steps", type=lambda text: [int(x) for x in text.split(",")], default=[4, 8, 12, 16])
    args = parser.parse_args()
    if args.part == "quality":
        quality(args)
    else:
        timing(args)


if __name__ == "__main__":
    main()
