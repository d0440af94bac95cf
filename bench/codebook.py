"""Codebook health benchmark (issue 3): plain VQ vs EMA vs the default quantizer on mnist5k.

Trains each configuration with the `train-vqvae` defaults (the same epochs, batch, loss and
augmentation; only the quantizer differs) on mnist5k's training split, K=512, D=64, 7x7 latents,
and prints validation PSNR (images in [0, 1], per-image average), codebook perplexity over the
whole validation split, codes used, dead codes and wall time; with --train-psnr also the PSNR and the
codes used on the training split: the generalisation gap, and codebook use counted over 220,500
positions rather than the validation split's 24,500 (fewer than three per code at K=8192, where even a
uniform codebook would leave about 5% of its codes unseen). The ablation rows (--only full-d-codes,
no-augment, mse-loss, no-head) each change one default of the default row; k2048 and k8192 are
the default row with a larger codebook (-K 2048, -K 8192), where the dead-code threshold, relative
to the mean use per code, must keep the live codes.

--quantizers compares the quantizers (the default VQ, VQ + rotation trick, FSQ [8,8,8] and [8,6,5],
residual VQ of depth 2 x K=64), each at the defaults otherwise, and follows each through the later
stages: a class-conditional prior at the `train-prior` defaults on its codes (its best validation
bits per code; for RVQ per code of the depth-2 stacks, two codes a position), 1,000 samples (100 per
class) and the share of them the reference classifier puts in the asked class.

    python bench/codebook.py                      # the table in docs/benchmarks.md (12 to 22 minutes a row on 2 cores)
    python bench/codebook.py --epochs 3 --only default
    python bench/codebook.py --only no-augment --train-psnr   # one default changed at a time
    python bench/codebook.py --only default --only k2048 --only k8192   # codebook size
    python bench/codebook.py --quantizers         # the quantizer table, with prior and samples
    python bench/codebook.py --quantizers --epochs 1 --prior-epochs 1 --prior-layers 2 --prior-channels 8 --samples 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vqgen.formats.checkpoints import load_vqvae
from vqgen.config import PRIOR_EPOCHS, GanOptions, PixelCNNConfig, PriorTrainOptions, VQVAEConfig, VQVAETrainOptions
from vqgen.data import load_image_data
from vqgen.data.batches import make_loader
from vqgen.eval import EvaluateRequest, evaluate
from vqgen.stages.extract_codes import extract_codes
from vqgen.stages.sample import run as sample
from vqgen.stages.train_prior import run as train_prior_on
from vqgen.measures import reconstruction_numbers as evaluate_vqvae
from vqgen.train.vqvae import train_vqvae

DEFAULT = VQVAEConfig()
DEFAULT_OPTS = VQVAETrainOptions()
PAPER_CODES = {"codebook_dim": None}  # codes of the full dimension D, as in the VQ-VAE paper
NO_UPKEEP = {"kmeans_init": False, "restart_dead": False}
# key: (row name, model config, training options; epochs, seed and device are set from the command line)
CONFIGS = {
    "plain": ("plain VQ (loss-based codebook)", replace(DEFAULT, ema=False, **NO_UPKEEP, **PAPER_CODES), DEFAULT_OPTS),
    "ema": ("EMA only", replace(DEFAULT, ema=True, **NO_UPKEEP, **PAPER_CODES), DEFAULT_OPTS),
    "default": ("default (EMA + k-means init + dead-code restarts, 6-d codes)", DEFAULT, DEFAULT_OPTS),
}
# one default changed at a time (not run unless asked for with --only)
ABLATIONS = {
    "full-d-codes": ("default, but codes of dimension D=64", replace(DEFAULT, **PAPER_CODES), DEFAULT_OPTS),
    "no-augment": ("default, but --augment-shift 0", DEFAULT, replace(DEFAULT_OPTS, augment_shift=0)),
    "mse-loss": ("default, but --recon-loss mse", DEFAULT, replace(DEFAULT_OPTS, gan=GanOptions(recon_loss="mse"))),
    "no-head": ("default, but --head-channels 0", replace(DEFAULT, head_channels=0), DEFAULT_OPTS),
    "k2048": ("default, but -K 2048", replace(DEFAULT, num_codes=2048), DEFAULT_OPTS),
    "k8192": ("default, but -K 8192", replace(DEFAULT, num_codes=8192), DEFAULT_OPTS),
}
# the quantizers (--quantizers: these after the default row, each followed through prior and samples)
QUANTIZERS = {
    "rotation-trick": ("VQ + rotation trick", replace(DEFAULT, rotation_trick=True), DEFAULT_OPTS),
    "fsq-888": ("FSQ [8,8,8] (K=512)", replace(DEFAULT, quantizer="fsq", fsq_levels="8,8,8"), DEFAULT_OPTS),
    "fsq-865": ("FSQ [8,6,5] (K=240)", replace(DEFAULT, quantizer="fsq", fsq_levels="8,6,5"), DEFAULT_OPTS),
    "rvq-2x64": ("RVQ depth 2 x K=64", replace(DEFAULT, quantizer="rvq", rvq_depth=2, num_codes=64), DEFAULT_OPTS),
}
ALL = {**CONFIGS, **ABLATIONS, **QUANTIZERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=VQVAETrainOptions.epochs, help="epochs per configuration")
    parser.add_argument("--only", choices=list(ALL), action="append", help="run only these configurations (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-psnr", action="store_true", help="also measure PSNR on the training split")
    parser.add_argument("--quantizers", action="store_true",
                        help="the quantizer rows (default, " + ", ".join(QUANTIZERS) + "), with prior and samples")
    parser.add_argument("--prior-epochs", type=int, default=PRIOR_EPOCHS["pixelcnn"])
    parser.add_argument("--prior-layers", type=int, default=PixelCNNConfig.num_layers)
    parser.add_argument("--prior-channels", type=int, default=PixelCNNConfig.channels)
    parser.add_argument("--samples", type=int, default=1000, help="samples drawn per row (spread over the classes)")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="reference classifier for the in-class share; default: train one for this run")
    args = parser.parse_args()
    chosen = args.only or (["default", *QUANTIZERS] if args.quantizers else list(CONFIGS))

    data = load_image_data("mnist5k", split_seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in chosen:
            name, cfg, opts = ALL[key]
            opts = replace(opts, epochs=args.epochs, seed=args.seed, device="cpu")
            started = time.time()
            out = Path(tmp) / f"{key}.safetensors"
            metrics = train_vqvae(data, cfg, opts, out)
            seconds = time.time() - started
            if args.train_psnr:
                metrics.update(training_split_metrics(out, data))
            if args.quantizers:
                metrics.update(downstream(out, data, args, Path(tmp)))
            rows.append((name, metrics, seconds))

    title = f"mnist5k, K=512 unless named, D=64, 7x7 latents, {args.epochs} epochs, {torch.get_num_threads()} threads"
    if args.quantizers:
        title += (f"; prior {args.prior_layers} layers x {args.prior_channels} channels, {args.prior_epochs} epochs; "
                  f"time: VQ-VAE only")
    table = Table(title=title)
    columns = ["quantizer", "val PSNR (dB)", "perplexity", "codes used", "dead codes", "time (s)"]
    if args.train_psnr:
        columns[2:2] = ["train PSNR (dB)"]
        columns[-2:-2] = ["codes used (train split)"]
    if args.quantizers:
        columns[-1:-1] = ["prior val bits/code", f"in the asked class ({args.samples} samples)"]
    for col in columns:
        table.add_column(col, justify="right" if col != "quantizer" else "left")
    for name, m, seconds in rows:
        cells = [
            name, f"{m['val_psnr']:.2f}", f"{m['val_perplexity']:.1f}",
            f"{m['val_codes_used']}/{m['val_num_codes']} ({m['val_usage']:.0%})", str(m["val_dead_codes"]),
            f"{seconds:.0f}",
        ]
        if args.train_psnr:
            cells[2:2] = [f"{m['train_psnr']:.2f}"]
            cells[-2:-2] = [f"{m['train_codes_used']}/{m['val_num_codes']} ({m['train_codes_used'] / m['val_num_codes']:.0%})"]
        if args.quantizers:
            cells[-1:-1] = [f"{m['prior_bits_per_code']:.3f}", f"{m['in_class']:.1%}"]
        table.add_row(*cells)
    Console(width=160).print(table)


def downstream(vqvae: Path, data, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Codes -> class-conditional prior -> samples -> the share in the asked class, for one VQ-VAE."""
    codes, prior, samples = (vqvae.with_name(f"{vqvae.stem}.{part}") for part in ("codes.safetensors",
                                                                                "prior.safetensors", "samples"))
    extract_codes(vqvae, data, codes, device="cpu")
    prior_cfg = PixelCNNConfig(channels=args.prior_channels, num_layers=args.prior_layers)
    prior_opts = PriorTrainOptions(epochs=args.prior_epochs, seed=args.seed, device="cpu")
    metrics = train_prior_on(codes, prior_cfg, prior_opts, prior)
    sample(prior, samples, args.samples, seed=args.seed, device="cpu")
    request = EvaluateRequest(samples=samples, classifier=args.classifier or tmp / "classifier.safetensors",
                              train_classifier=args.classifier is None, device="cpu", kid_subsets=10)
    result = evaluate(request, log=lambda text: print(f"  {text}", flush=True))
    return {"prior_bits_per_code": metrics["best_val_bits_per_code"], "in_class": result["samples"]["class_agreement"]}


def training_split_metrics(path: Path, data) -> dict[str, float]:
    model, _ = load_vqvae(path)
    loader = make_loader(data.train, 256, shuffle=False, seed=0)
    measured = evaluate_vqvae(model, loader, torch.device("cpu"))
    return {"train_psnr": measured["psnr"], "train_codes_used": measured["codes_used"]}


if __name__ == "__main__":
    main()
