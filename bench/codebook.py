"""Codebook health benchmark (issue 3): plain VQ vs EMA vs the default quantizer on mnist5k.

Trains each configuration with the `train-vqvae` defaults (the same epochs, batch, loss and
augmentation; only the quantizer differs) on mnist5k's training split, K=512, D=64, 7x7 latents,
and prints validation PSNR (images in [0, 1], per-image average), codebook perplexity over the
whole validation split, codes used, dead codes and wall time; with --train-psnr also the PSNR on
the training split, to show the generalisation gap. The ablation rows (--only full-d-codes,
no-augment, mse-loss, no-head) each change one default of the default row; k2048 and k8192 are
the default row with a larger codebook (-K 2048, -K 8192), where the dead-code threshold, relative
to the mean use per code, must keep the live codes.

    python bench/codebook.py                      # the README table (12 to 22 minutes a row on 2 cores)
    python bench/codebook.py --epochs 3 --only default
    python bench/codebook.py --only no-augment --train-psnr   # one default changed at a time
    python bench/codebook.py --only default --only k2048 --only k8192   # codebook size
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

from vqgen.checkpoint import load_vqvae
from vqgen.data import load_image_data
from vqgen.config import GanOptions
from vqgen.models.vqvae import VQVAEConfig
from vqgen.data.batches import make_loader
from vqgen.config import VQVAETrainOptions
from vqgen.train.vqvae import evaluate_vqvae, train_vqvae

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=VQVAETrainOptions.epochs, help="epochs per configuration")
    parser.add_argument(
        "--only", choices=[*CONFIGS, *ABLATIONS], action="append", help="run only these configurations (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-psnr", action="store_true", help="also measure PSNR on the training split")
    args = parser.parse_args()
    chosen = args.only or list(CONFIGS)

    data = load_image_data("mnist5k", split_seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in chosen:
            name, cfg, opts = {**CONFIGS, **ABLATIONS}[key]
            opts = replace(opts, epochs=args.epochs, seed=args.seed, device="cpu")
            started = time.time()
            out = Path(tmp) / f"{key}.safetensors"
            metrics = train_vqvae(data, cfg, opts, out)
            seconds = time.time() - started
            if args.train_psnr:
                metrics["train_psnr"] = training_split_psnr(out, data)
            rows.append((name, metrics, seconds))

    title = f"mnist5k, K=512 unless named, D=64, 7x7 latents, {args.epochs} epochs, {torch.get_num_threads()} threads"
    table = Table(title=title)
    columns = ["quantizer", "val PSNR (dB)", "perplexity", "codes used", "dead codes", "time (s)"]
    if args.train_psnr:
        columns.insert(2, "train PSNR (dB)")
    for col in columns:
        table.add_column(col, justify="right" if col != "quantizer" else "left")
    for name, m, seconds in rows:
        cells = [
            name, f"{m['val_psnr']:.2f}", f"{m['val_perplexity']:.1f}",
            f"{m['val_codes_used']}/{m['val_num_codes']} ({m['val_usage']:.0%})", str(m["val_dead_codes"]),
            f"{seconds:.0f}",
        ]
        if args.train_psnr:
            cells.insert(2, f"{m['train_psnr']:.2f}")
        table.add_row(*cells)
    Console(width=160).print(table)


def training_split_psnr(path: Path, data) -> float:
    model, _ = load_vqvae(path)
    loader = make_loader(data.train, 256, shuffle=False, seed=0)
    return evaluate_vqvae(model, loader, torch.device("cpu"))["psnr"]


if __name__ == "__main__":
    main()
