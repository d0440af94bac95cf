"""The four stages: train-vqvae, extract-codes, train-prior, sample."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from vqgen.cli import (
    BatchOpt, DataRootOpt, DeviceOpt, ResumeOpt, VQVAEArg, app, err_console, friendly_errors, out_console,
    out_option, prior_path, single_process, vqvae_path,
)
from vqgen.cli.options import OneOf, options_from
from vqgen.config import (
    CLASSES,
    DATA,
    DEFAULT_PRIOR_ARCH,
    MODEL,
    OUTPUT,
    PRIOR_ARCHS,
    VQVAE_PRESETS,
    DataOptions,
    ExtractOptions,
    GanOptions,
    PriorConfig,
    PriorTrainOptions,
    SampleOptions,
    VQVAEConfig,
    VQVAETrainOptions,
    copies_kind,
)

# ---------------------------------------------------------------------------- stage 1


@app.command("train-vqvae")
@friendly_errors
@options_from(DataOptions, VQVAEConfig, VQVAETrainOptions, GanOptions, presets=VQVAE_PRESETS)
def train_vqvae_cmd(
    out: Annotated[Path, out_option("Checkpoint")] = Path("checkpoints/vqvae.safetensors"),
    resume: ResumeOpt = None,
    *,
    data_options: DataOptions,
    vqvae_config: VQVAEConfig,
    vqvae_train_options: VQVAETrainOptions,
    gan_options: GanOptions,
) -> None:
    """Stage 1: train the VQ-VAE (encoder, codebook of K vectors, decoder)."""
    from vqgen.stages import train_vqvae

    m = train_vqvae.run(data_options, vqvae_config, replace(vqvae_train_options, gan=gan_options), out, resume=resume)
    out_console.print(
        f"wrote {out}: val PSNR {m['val_psnr']:.2f} dB, perplexity {m['val_perplexity']:.1f}, "
        f"codes used {m['val_codes_used']}/{m['val_num_codes']}",
        soft_wrap=True,  # one line also in a log file (rich wraps at 80 columns when it is not a terminal)
    )


# ---------------------------------------------------------------------------- stage 2


@app.command("extract-codes")
@friendly_errors
@options_from(ExtractOptions)
def extract_codes_cmd(
    vqvae: VQVAEArg,
    data: Annotated[
        Optional[str],
        typer.Option("--data", help="Dataset to encode; default: the one the VQ-VAE was trained on.",
                     rich_help_panel=DATA),
    ] = None,
    out: Annotated[Path, out_option("Code file")] = Path("checkpoints/codes.safetensors"),
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    *,
    extract_options: ExtractOptions,
) -> None:
    """Stage 2: encode a dataset into code maps (both splits, with labels; and shifted copies of the training
    images) in one file."""
    single_process("extract-codes")
    from vqgen.stages import extract_codes

    result = extract_codes.run(vqvae, out, data=data, data_root=data_root, batch_size=batch_size, device=device,
                               augment=extract_options)
    print_codebook_audit(result)
    top = result.get("latent_shape_top")
    copies = (result.get("augment") or {}).get("augment_copies", 0)
    out_console.print(
        f"wrote {out}: {result['num_train']} train"
        + (f" (the images and {copies} {copies_kind(result.get('augment'))} copies)" if copies else "") + f" + {result['num_val']} val code maps of "
        f"{result['latent_shape'][0]}x{result['latent_shape'][1]}"
        + (f" (bottom) and {top[0]}x{top[1]} (top)" if top else "") + f", K={result['num_codes']}",
        soft_wrap=True,
    )


def print_codebook_audit(result: dict) -> None:
    from rich.table import Table

    table = Table(title="codebook audit")
    for col in ("split", "codes used", "usage", "perplexity", "top-10 share", "dead codes"):
        table.add_column(col, justify="right")
    rows = list(result["codebook_audit"].items())
    rows += [(f"{split} (top)", a) for split, a in result.get("codebook_audit_top", {}).items()]
    for split, a in rows:
        table.add_row(
            split, f"{a['codes_used']}/{a['num_codes']}", f"{a['usage']:.1%}", f"{a['perplexity']:.1f}",
            f"{a['top10_share']:.1%}", str(a["dead_codes"]),
        )
    err_console.print(table)


# ---------------------------------------------------------------------------- stage 3


PRIOR_ARCH_OPTIONS = OneOf(
    "arch", PRIOR_ARCHS, DEFAULT_PRIOR_ARCH,
    "Prior architecture: gated PixelCNN, decoder-only causal transformer, or masked bidirectional transformer "
    "(MaskGIT: sampled in a few parallel steps)",
    "prior_config",
)


@app.command("train-prior")
@friendly_errors
@options_from(PRIOR_ARCH_OPTIONS, PriorTrainOptions)
def train_prior_cmd(
    codes: Annotated[Path, typer.Argument(help="Code file from extract-codes.")],
    out: Annotated[Path, out_option("Prior checkpoint")] = Path("checkpoints/prior.safetensors"),
    conditional: Annotated[
        Optional[bool],
        typer.Option("--conditional/--unconditional", rich_help_panel=CLASSES, metavar="",
                     help="Class-conditional prior; default: on when codes have labels."),
    ] = None,
    resume: ResumeOpt = None,
    *,
    prior_config: PriorConfig,
    prior_train_options: PriorTrainOptions,
) -> None:
    """Stage 3: fit a prior (gated PixelCNN, or with --arch transformer a causal transformer, with --arch masked a
    masked prior) to the code maps."""
    from vqgen.stages import train_prior

    m = train_prior.run(codes, prior_config, prior_train_options, out, conditional=conditional, resume=resume)
    if "best_val_masked_nll_nats" in m:  # a masked prior has no bits per code
        best = (f"{m['best_val_masked_nll_nats']:.3f} nats per hidden code at mask ratio {m['val_mask_ratio']:g} "
                f"(last epoch {m['val_masked_nll_nats']:.3f})")
    else:
        best = f"{m['best_val_bits_per_code']:.3f} bits/code (last epoch {m['val_bits_per_code']:.3f})"
    out_console.print(f"wrote {out}: best val {best}", soft_wrap=True)


# ---------------------------------------------------------------------------- stage 4


@app.command("sample")
@friendly_errors
@options_from(SampleOptions)
def sample_cmd(
    prior: Annotated[
        Path, typer.Argument(help="Prior checkpoint from train-prior, or a shipped model: mnist5k.", parser=prior_path)
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for grid.png, one PNG per sample and codes.safetensors.",
                           rich_help_panel=OUTPUT)
    ] = Path("samples"),
    vqvae: Annotated[
        Optional[Path],
        typer.Option("--vqvae", help="VQ-VAE to decode with; default: the one recorded in the prior.", parser=vqvae_path,
                     rich_help_panel=MODEL),
    ] = None,
    *,
    sample_options: SampleOptions,
) -> None:
    """Stage 4: draw code maps from the prior, decode them, write PNGs and a grid."""
    single_process("sample")
    from vqgen.stages import sample

    result = sample.run(prior, out, vqvae_path=vqvae, options=sample_options)
    out_console.print(f"wrote {result['count']} samples to {out}/ (grid: {result['grid']})", soft_wrap=True)
