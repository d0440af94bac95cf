"""Codebook health benchmark (issue 3): plain VQ vs EMA vs the default quantizer on mnist5k.

Trains each configuration for the same number of epochs on mnist5k's training split (K=512, D=64,
7x7 latents) and prints validation PSNR (images in [0, 1], per-image average), codebook
perplexity over the whole validation split, codes used and wall time.

    python bench/codebook.py                      # the README table (about 15 minutes on 2 cores)
    python bench/codebook.py --epochs 3 --only default
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

from vqgen.data import load_image_data
from vqgen.models.vqvae import VQVAEConfig
from vqgen.stages.train_vqvae import VQVAETrainOptions, train_vqvae

DEFAULT = VQVAEConfig()
CONFIGS = {
    "plain VQ (loss-based codebook)": replace(DEFAULT, ema=False, kmeans_init=False, restart_dead=False),
    "EMA only": replace(DEFAULT, ema=True, kmeans_init=False, restart_dead=False),
    "default (EMA + k-means init + dead-code restarts)": DEFAULT,
}
SHORT = {"plain": 0, "ema": 1, "default": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=VQVAETrainOptions.epochs, help="epochs per configuration")
    parser.add_argument("--only", choices=sorted(SHORT), action="append", help="run only these configurations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = list(CONFIGS)
    chosen = [names[SHORT[o]] for o in args.only] if args.only else names

    data = load_image_data("mnist5k", split_seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            cfg = CONFIGS[name]
            opts = VQVAETrainOptions(epochs=args.epochs, seed=args.seed, device="cpu")
            started = time.time()
            metrics = train_vqvae(data, cfg, opts, Path(tmp) / "vqvae.safetensors")
            rows.append((name, metrics, time.time() - started))

    table = Table(title=f"mnist5k, K=512, D=64, 7x7 latents, {args.epochs} epochs, {torch.get_num_threads()} threads")
    for col in ("quantizer", "val PSNR (dB)", "perplexity", "codes used", "dead codes", "time (s)"):
        table.add_column(col, justify="right" if col != "quantizer" else "left")
    for name, m, seconds in rows:
        table.add_row(
            name, f"{m['val_psnr']:.2f}", f"{m['val_perplexity']:.1f}",
            f"{m['val_codes_used']}/{m['val_num_codes']} ({m['val_usage']:.0%})", str(m["val_dead_codes"]),
            f"{seconds:.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
