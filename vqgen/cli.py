"""The ``vqgen`` command line: a thin Typer layer over the stages."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vqgen.errors import VQGenError

app = typer.Typer(
    help="Two-stage discrete generative modelling of images: VQ-VAE + gated PixelCNN prior.\n\n"
    "Pipeline: train-vqvae -> extract-codes -> train-prior -> sample.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out_console = Console()
err_console = Console(stderr=True)


def friendly_errors(command):
    """Turn a VQGenError into one red line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VQGenError as e:
            err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


# ---------------------------------------------------------------------------- shared options

DataOpt = Annotated[
    str, typer.Option("--data", help="mnist5k (shipped), mnist, fashion-mnist, cifar10, or a folder of images.")
]
DataRootOpt = Annotated[Path, typer.Option("--data-root", help="Where torchvision datasets are downloaded.")]
ImageSizeOpt = Annotated[
    Optional[int], typer.Option("--image-size", help="Resize (shorter side) and centre-crop to this size.")
]
ChannelsOpt = Annotated[Optional[int], typer.Option("--channels", help="Force 1 (grey) or 3 (RGB); default: detect.")]
ValFractionOpt = Annotated[float, typer.Option("--val-fraction", help="Share of images held out for validation.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for data split, initialisation and order (CPU runs repeat exactly).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
AmpOpt = Annotated[str, typer.Option("--amp", help="Mixed precision on CUDA: off, bf16 or fp16 (CPU runs in float32).")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training split.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size per process (global = this x processes).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (warm-up, then cosine decay).")]


# ---------------------------------------------------------------------------- stage 1


@app.command("train-vqvae")
@friendly_errors
def train_vqvae_cmd(
    data: DataOpt = "mnist5k",
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")] = Path(
        "checkpoints/vqvae.safetensors"
    ),
    data_root: DataRootOpt = Path("data"),
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    skip_bad_images: Annotated[
        bool, typer.Option("--skip-bad-images", help="Skip unreadable image files (with a warning) instead of failing.")
    ] = False,
    num_codes: Annotated[int, typer.Option("--num-codes", "-K", help="Codebook size K.")] = 512,
    code_dim: Annotated[int, typer.Option("--code-dim", "-D", help="Dimension D of the encoder output / codes.")] = 64,
    hidden: Annotated[int, typer.Option("--hidden", help="Channels of the encoder/decoder trunk.")] = 128,
    res_channels: Annotated[int, typer.Option("--res-channels", help="Bottleneck channels of residual blocks.")] = 64,
    res_blocks: Annotated[int, typer.Option("--res-blocks", help="Residual blocks in encoder and decoder.")] = 2,
    downsamples: Annotated[
        int, typer.Option("--downsamples", help="Stride-2 stages n; downsampling factor 2^n (2: 28x28 -> 7x7).")
    ] = 2,
    beta: Annotated[float, typer.Option("--beta", help="Weight of the commitment loss.")] = 0.25,
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="EMA codebook updates (else the loss-based codebook update).")
    ] = True,
    decay: Annotated[float, typer.Option("--decay", help="EMA decay of codebook statistics.")] = 0.99,
    kmeans_init: Annotated[
        bool, typer.Option("--kmeans-init/--no-kmeans-init", help="Initialise codes by k-means on the first batch.")
    ] = True,
    restart_dead: Annotated[
        bool, typer.Option("--restart-dead/--no-restart-dead", help="Re-seed unused codes from recent encoder outputs.")
    ] = True,
    dead_threshold: Annotated[
        float, typer.Option("--dead-threshold", help="A code is dead when its EMA count per batch falls below this.")
    ] = 1.0,
    restart_every: Annotated[int, typer.Option("--restart-every", help="Steps between dead-code checks.")] = 50,
    cosine: Annotated[bool, typer.Option("--cosine/--no-cosine", help="l2-normalised (cosine) codes.")] = False,
    codebook_dim: Annotated[
        Optional[int], typer.Option("--codebook-dim", help="Low-dimensional codebook with in/out projections.")
    ] = None,
    epochs: EpochsOpt = 15,
    batch_size: BatchOpt = 64,
    lr: LrOpt = 1e-3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "off",
    compile: CompileOpt = False,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
) -> None:
    """Stage 1: train the VQ-VAE (encoder, codebook of K vectors, decoder)."""
    from vqgen.data import load_image_data
    from vqgen.models.vqvae import VQVAEConfig
    from vqgen.stages.train_vqvae import VQVAETrainOptions, train_vqvae

    images = load_image_data(
        data,
        image_size=image_size,
        channels=channels,
        split_seed=seed,
        val_fraction=val_fraction,
        root=data_root,
        skip_bad_images=skip_bad_images,
    )
    cfg = VQVAEConfig(
        in_channels=images.channels,
        image_size=images.image_size,
        hidden_channels=hidden,
        res_channels=res_channels,
        num_res_blocks=res_blocks,
        num_downsamples=downsamples,
        num_codes=num_codes,
        code_dim=code_dim,
        beta=beta,
        ema=ema,
        decay=decay,
        kmeans_init=kmeans_init,
        restart_dead=restart_dead,
        dead_threshold=dead_threshold,
        restart_every=restart_every,
        cosine=cosine,
        codebook_dim=codebook_dim,
    )
    opts = VQVAETrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, amp=amp, compile=compile,
        num_workers=workers,
    )
    describe_data(images)
    metrics = train_vqvae(images, cfg, opts, out)
    out_console.print(
        f"wrote {out}: val PSNR {metrics['val_psnr']:.2f} dB, perplexity {metrics['val_perplexity']:.1f}, "
        f"codes used {metrics['val_codes_used']}/{metrics['val_num_codes']}"
    )


def describe_data(images) -> None:
    h, w = images.image_size
    labels = f"{images.num_classes} classes" if images.label_names else "unlabelled"
    err_console.print(
        f"data {images.spec['data']}: {len(images.train)} train / {len(images.val)} val images, "
        f"{images.channels}x{h}x{w}, {labels}",
        highlight=False,
    )


# ---------------------------------------------------------------------------- stage 2


@app.command("extract-codes")
@friendly_errors
def extract_codes_cmd(
    vqvae: Annotated[Path, typer.Argument(help="VQ-VAE checkpoint from train-vqvae.")],
    data: Annotated[
        Optional[str], typer.Option("--data", help="Dataset to encode; default: the one the VQ-VAE was trained on.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Code file to write (.safetensors).")] = Path(
        "checkpoints/codes.safetensors"
    ),
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
) -> None:
    """Stage 2: encode a dataset into code maps (both splits, with labels) in one file."""
    from vqgen.checkpoint import read_metadata, expect_kind
    from vqgen.data import image_data_from_spec
    from vqgen.stages.extract_codes import LOW_USAGE_WARNING, extract_codes

    meta = read_metadata(vqvae)
    expect_kind(vqvae, meta, "vqvae")
    spec = dict(meta["dataset"])
    if data is not None:
        spec["data"] = data
    # encode at the size and channel count the VQ-VAE was trained with
    spec["image_size"] = meta["image"]["size"][0]
    spec["channels"] = meta["image"]["channels"]
    images = image_data_from_spec(spec, root=data_root)
    describe_data(images)
    result = extract_codes(vqvae, images, out, batch_size=batch_size, device=device)
    print_codebook_audit(result)
    if result["codebook_audit"]["train"]["usage"] < LOW_USAGE_WARNING:
        err_console.print(
            f"[bold yellow]warning: only {result['codebook_audit']['train']['usage']:.0%} of the codebook is used; "
            "the VQ-VAE has collapsed codes (try the default EMA + k-means + dead-code restarts)[/bold yellow]"
        )
    out_console.print(
        f"wrote {out}: {result['num_train']} train + {result['num_val']} val code maps of "
        f"{result['latent_shape'][0]}x{result['latent_shape'][1]}, K={result['num_codes']}"
    )


def print_codebook_audit(result: dict) -> None:
    from rich.table import Table

    table = Table(title="codebook audit")
    for col in ("split", "codes used", "usage", "perplexity", "top-10 share", "dead codes"):
        table.add_column(col, justify="right")
    for split, a in result["codebook_audit"].items():
        table.add_row(
            split, f"{a['codes_used']}/{a['num_codes']}", f"{a['usage']:.1%}", f"{a['perplexity']:.1f}",
            f"{a['top10_share']:.1%}", str(a["dead_codes"]),
        )
    err_console.print(table)


# ---------------------------------------------------------------------------- stage 3


@app.command("train-prior")
@friendly_errors
def train_prior_cmd(
    codes: Annotated[Path, typer.Argument(help="Code file from extract-codes.")],
    out: Annotated[Path, typer.Option("--out", help="Prior checkpoint to write (.safetensors).")] = Path(
        "checkpoints/prior.safetensors"
    ),
    conditional: Annotated[
        Optional[bool],
        typer.Option("--conditional/--unconditional", help="Class-conditional prior; default: on when codes have labels."),
    ] = None,
    layers: Annotated[int, typer.Option("--layers", help="Gated layers.")] = 15,
    channels: Annotated[int, typer.Option("--channels", help="Channels of the vertical/horizontal stacks.")] = 64,
    kernel_size: Annotated[int, typer.Option("--kernel-size", help="Odd kernel size k of the stacks.")] = 5,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout on the gated horizontal features.")] = 0.0,
    epochs: EpochsOpt = 30,
    batch_size: BatchOpt = 64,
    lr: LrOpt = 1e-3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "off",
    compile: CompileOpt = False,
) -> None:
    """Stage 3: fit a gated PixelCNN prior to the code maps."""
    from vqgen.models.pixelcnn import PixelCNNConfig
    from vqgen.stages.train_prior import PriorTrainOptions, load_codes, train_prior

    code_file = load_codes(codes)
    if conditional is None:
        conditional = code_file.labelled
    elif conditional and not code_file.labelled:
        raise VQGenError(f"{codes}: --conditional needs labelled codes, but these have no labels")
    cfg = PixelCNNConfig(
        num_codes=code_file.meta["num_codes"],
        latent_shape=tuple(code_file.meta["latent_shape"]),
        channels=channels,
        num_layers=layers,
        kernel_size=kernel_size,
        num_classes=len(code_file.meta["label_names"]) if conditional else 0,
        dropout=dropout,
    )
    opts = PriorTrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, amp=amp, compile=compile
    )
    kind = f"conditional on {cfg.num_classes} classes" if conditional else "unconditional"
    err_console.print(f"prior: {len(code_file.train)} train / {len(code_file.val)} val code maps, {kind}")
    metrics = train_prior(code_file, cfg, opts, out)
    out_console.print(
        f"wrote {out}: best val {metrics['best_val_bits_per_code']:.3f} bits/code "
        f"(last epoch {metrics['val_bits_per_code']:.3f})"
    )


# ---------------------------------------------------------------------------- stage 4


@app.command("sample")
@friendly_errors
def sample_cmd(
    prior: Annotated[Path, typer.Argument(help="Prior checkpoint from train-prior.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples (with --label all: n // classes per class).")] = 64,
    out: Annotated[Path, typer.Option("--out", help="Folder for grid.png, one PNG per sample and codes.safetensors.")] = Path(
        "samples"
    ),
    vqvae: Annotated[
        Optional[Path], typer.Option("--vqvae", help="VQ-VAE to decode with; default: the one recorded in the prior.")
    ] = None,
    label: Annotated[
        Optional[str],
        typer.Option("--label", help="Class index or name, a comma list, or 'all' (one row per class; the default)."),
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature (> 0).")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample only among the k most likely codes.")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="cached (fast) or full (recompute the whole map per code).")] = "cached",
    batch_size: BatchOpt = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    allow_vqvae_mismatch: Annotated[
        bool, typer.Option("--allow-vqvae-mismatch", help="Decode even if the VQ-VAE is not the one the prior was fit to.")
    ] = False,
) -> None:
    """Stage 4: draw code maps from the prior, decode them, write PNGs and a grid."""
    from vqgen.stages.sample import sample

    result = sample(
        prior, out, n, vqvae_path=vqvae, label=label, temperature=temperature, top_k=top_k, seed=seed,
        batch_size=batch_size, sampler=sampler, device=device, allow_vqvae_mismatch=allow_vqvae_mismatch,
    )
    out_console.print(f"wrote {result['count']} samples to {out}/ (grid: {result['grid']})")


def main() -> None:
    app(prog_name="vqgen")


if __name__ == "__main__":
    sys.exit(main())
