"""The ``vqgen`` command line: a thin Typer layer over the stages."""

from __future__ import annotations

import functools
import os
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
# under torchrun only rank 0 reports (read from the environment: importing the CLI stays torch-free);
# errors still go to err_console on every rank
MAIN_PROCESS = os.environ.get("RANK", "0") == "0"
out_console = Console(quiet=not MAIN_PROCESS)
info_console = Console(stderr=True, quiet=not MAIN_PROCESS)
err_console = Console(stderr=True)


def friendly_errors(command):
    """Turn a VQGenError into one red line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VQGenError as e:
            err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None  # 130/143 when stopped by a signal
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
SaveEveryOpt = Annotated[
    int,
    typer.Option(
        "--save-every",
        help="Epochs between resumable training states (OUT.resume.safetensors); also saved after the last "
        "epoch and on Ctrl-C/SIGTERM.",
    ),
]
ResumeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--resume",
        help="Continue a stopped run from a resume file, or 'auto' for this --out's OUT.resume.safetensors "
        "(starts fresh when there is none). \\[default: start fresh]",
    ),
]


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
    head_channels: Annotated[
        int,
        typer.Option(
            "--head-channels",
            help="Decoder head: the last upsampling gives this many channels, then a 3x3 conv draws the image (0: none).",
        ),
    ] = 32,
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
        int,
        typer.Option(
            "--codebook-dim", help="Dimension of the codes, with linear in/out projections to D (0: codes of dimension D)."
        ),
    ] = 6,
    epochs: EpochsOpt = 100,
    batch_size: BatchOpt = 16,
    lr: LrOpt = 2e-3,
    augment_shift: Annotated[
        int,
        typer.Option(
            "--augment-shift", help="Shift training images by up to this many whole pixels, at random each epoch (0: off)."
        ),
    ] = 2,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "off",
    compile: CompileOpt = False,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    save_every: SaveEveryOpt = 1,
    resume: ResumeOpt = None,
    recon_loss: Annotated[
        str,
        typer.Option(
            "--recon-loss",
            help="Pixel reconstruction loss: psnr (mean per-image log-MSE, i.e. the mean PSNR), mse, l1 or l1+mse.",
        ),
    ] = "psnr",
    gan: Annotated[
        bool,
        typer.Option("--gan/--no-gan", help="VQGAN-style training: add a PatchGAN discriminator (hinge loss, adaptive weight)."),
    ] = False,
    gan_start: Annotated[
        int, typer.Option("--gan-start", help="Steps of plain reconstruction training before the discriminator joins.")
    ] = 500,
    gan_weight: Annotated[
        float, typer.Option("--gan-weight", help="Factor on the adaptive weight of the adversarial loss.")
    ] = 0.1,
    disc_layers: Annotated[
        int, typer.Option("--disc-layers", help="Stride-2 layers of the discriminator (patch size grows with it).")
    ] = 3,
    disc_channels: Annotated[int, typer.Option("--disc-channels", help="Channels of the first discriminator layer.")] = 64,
    perceptual_weights: Annotated[
        Optional[Path],
        typer.Option(
            "--perceptual-weights",
            help="torchvision VGG16 weights file (.pth or .safetensors): adds an LPIPS-style perceptual loss.",
        ),
    ] = None,
    perceptual_weight: Annotated[
        Optional[float],
        typer.Option("--perceptual-weight", help="Weight of the perceptual loss (needs --perceptual-weights). [default: 1.0]"),
    ] = None,
) -> None:
    """Stage 1: train the VQ-VAE (encoder, codebook of K vectors, decoder)."""
    from vqgen import distributed as dist
    from vqgen.checkpoint import check_output_path
    from vqgen.data import load_image_data
    from vqgen.gan import GanOptions
    from vqgen.models.vqvae import VQVAEConfig
    from vqgen.runtime import resolve_device
    from vqgen.stages.train_vqvae import VQVAETrainOptions, train_vqvae

    if perceptual_weight is not None and perceptual_weights is None:
        raise VQGenError(
            "--perceptual-weight needs --perceptual-weights PATH (torchvision's VGG16 weights file); "
            "vqgen downloads no pretrained networks"
        )
    gan_opts = GanOptions(
        gan=gan, gan_start=gan_start, gan_weight=gan_weight, disc_layers=disc_layers, disc_channels=disc_channels,
        recon_loss=recon_loss, perceptual_weights=str(perceptual_weights) if perceptual_weights else None,
        perceptual_weight=1.0 if perceptual_weight is None else perceptual_weight,
    )
    gan_opts.validate()  # before loading data: a bad option fails at once
    check_output_path(out)
    dist.setup(resolve_device(device))  # under torchrun: join now, so that one process per machine downloads
    with dist.local_main_first():
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
        head_channels=head_channels,
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
        codebook_dim=codebook_dim or None,
    )
    opts = VQVAETrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, augment_shift=augment_shift, seed=seed, device=device, amp=amp,
        compile=compile, num_workers=workers, save_every=save_every, gan=gan_opts,
    )
    describe_data(images)
    metrics = train_vqvae(images, cfg, opts, out, resume=resume)
    out_console.print(
        f"wrote {out}: val PSNR {metrics['val_psnr']:.2f} dB, perplexity {metrics['val_perplexity']:.1f}, "
        f"codes used {metrics['val_codes_used']}/{metrics['val_num_codes']}"
    )


def describe_data(images) -> None:
    h, w = images.image_size
    labels = f"{images.num_classes} classes" if images.label_names else "unlabelled"
    info_console.print(
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
    from vqgen.checkpoint import check_output_path, expect_kind, read_metadata
    from vqgen.data import image_data_from_spec
    from vqgen.stages.extract_codes import LOW_USAGE_WARNING, extract_codes

    meta = read_metadata(vqvae)
    expect_kind(vqvae, meta, "vqvae")
    check_output_path(out)
    spec = dict(meta["dataset"])
    if data is not None:
        spec["data"] = data
    # encode at the size (height, width) and channel count the VQ-VAE was trained with
    spec["image_size"] = meta["image"]["size"]
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
    kernel_size: Annotated[int, typer.Option("--kernel-size", help="Odd kernel size k of the stacks.")] = 3,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout on the gated horizontal features.")] = 0.0,
    label_dropout: Annotated[
        float,
        typer.Option("--label-dropout", help="Share of labels swapped for a learnt 'no class' label (for sample --guidance)."),
    ] = 0.0,
    epochs: EpochsOpt = 12,
    batch_size: BatchOpt = 64,
    lr: LrOpt = 1e-3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "off",
    compile: CompileOpt = False,
    save_every: SaveEveryOpt = 1,
    resume: ResumeOpt = None,
) -> None:
    """Stage 3: fit a gated PixelCNN prior to the code maps."""
    from vqgen.checkpoint import check_output_path
    from vqgen.models.pixelcnn import PixelCNNConfig
    from vqgen.stages.train_prior import PriorTrainOptions, load_codes, train_prior

    code_file = load_codes(codes)
    check_output_path(out)
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
        label_dropout=label_dropout,
    )
    cfg.validate()
    opts = PriorTrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, amp=amp, compile=compile,
        save_every=save_every,
    )
    kind = f"conditional on {cfg.num_classes} classes" if conditional else "unconditional"
    info_console.print(f"prior: {len(code_file.train)} train / {len(code_file.val)} val code maps, {kind}")
    metrics = train_prior(code_file, cfg, opts, out, resume=resume)
    out_console.print(
        f"wrote {out}: best val {metrics['best_val_bits_per_code']:.3f} bits/code "
        f"(last epoch {metrics['val_bits_per_code']:.3f})"
    )


# ---------------------------------------------------------------------------- stage 4


@app.command("sample")
@friendly_errors
def sample_cmd(
    prior: Annotated[Path, typer.Argument(help="Prior checkpoint from train-prior.")],
    n: Annotated[int, typer.Option("--n", help="Number of images (--label all: spread over the classes).")] = 64,
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
    guidance: Annotated[
        float,
        typer.Option("--guidance", help="Classifier-free guidance scale S >= 0 (1: none; needs --label-dropout)."),
    ] = 1.0,
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
        guidance=guidance,
    )
    out_console.print(f"wrote {result['count']} samples to {out}/ (grid: {result['grid']})")


# ---------------------------------------------------------------------------- everyday tools

VQVAEArg = Annotated[Path, typer.Argument(help="VQ-VAE checkpoint from train-vqvae.")]
ToolDataOpt = Annotated[
    Optional[str],
    typer.Option("--data", help="Dataset (as for train-vqvae); default: the one the VQ-VAE was trained on."),
]
SplitOpt = Annotated[str, typer.Option("--split", help="Which split of the data: train or val.")]


@app.command("reconstruct")
@friendly_errors
def reconstruct_cmd(
    vqvae: VQVAEArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for grid.png, images/ (one PNG per input) and metrics.json.")] = Path(
        "reconstructions"
    ),
    data: ToolDataOpt = None,
    split: SplitOpt = "val",
    n: Annotated[int, typer.Option("--n", help="How many images, spread evenly over the split.")] = 64,
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
) -> None:
    """Originals beside their reconstructions (grid.png), each reconstruction as a PNG, and MSE/PSNR."""
    from vqgen.tools.reconstruct import reconstruct

    r = reconstruct(vqvae, out, data=data, split=split, n=n, batch_size=batch_size, device=device, data_root=data_root)
    out_console.print(
        f"{r['count']} {r['split']} images of {r['data']}: MSE {r['mse']:.5f}, PSNR {r['psnr']:.2f} dB "
        f"(of the mean MSE: {r['psnr_of_mean_mse']:.2f} dB)",
        soft_wrap=True,
    )
    out_console.print(
        f"wrote {r['grid']} (original | reconstruction pairs), {r['images']}/ and {out / 'metrics.json'}",
        soft_wrap=True,
    )


@app.command("interpolate")
@friendly_errors
def interpolate_cmd(
    vqvae: VQVAEArg,
    image_a: Annotated[str, typer.Argument(help="First image: a file, or DATA:INDEX (e.g. mnist5k:0, a validation image).")],
    image_b: Annotated[str, typer.Argument(help="Second image, as IMAGE_A.")],
    out: Annotated[
        Path, typer.Option("--out", help="Strip PNG of the encoder-space walk; the code-swap walk goes to OUT.codes.png.")
    ] = Path("interpolation.png"),
    steps: Annotated[int, typer.Option("--steps", help="Decoded steps from A's codes to B's (at least 2).")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the order in which codes are swapped.")] = 0,
    data_root: DataRootOpt = Path("data"),
    device: DeviceOpt = "auto",
) -> None:
    """Walk from IMAGE_A to IMAGE_B: blend encoder outputs (then quantize, decode), and swap codes one by one."""
    from vqgen.tools.interpolate import interpolate

    r = interpolate(vqvae, image_a, image_b, out, steps=steps, seed=seed, device=device, data_root=data_root)
    out_console.print(
        f"wrote {r['latent']} (encoder-space walk) and {r['codes']} (code swaps; {r['differing_codes']} of "
        f"{r['num_positions']} codes differ); each strip: A, {steps} steps, B",
        soft_wrap=True,
    )


@app.command("info")
@friendly_errors
def info_cmd(
    file: Annotated[Path, typer.Argument(help="Any file vqgen wrote: VQ-VAE, prior, codes, samples, ...")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")] = False,
) -> None:
    """What a vqgen file is: kind, config, dataset, labels, metrics, tensors, size and sha256."""
    from vqgen.tools.info import describe, render, to_json

    info = describe(file)
    if as_json:
        typer.echo(to_json(info))
    else:
        out_console.print(render(info))


@app.command("codebook")
@friendly_errors
def codebook_cmd(
    vqvae: VQVAEArg,
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("codebook.png"),
    data: ToolDataOpt = None,
    split: SplitOpt = "val",
    map_size: Annotated[
        Optional[int], typer.Option("--map-size", help="Side of the latent map each code is tiled over; default: latent size, at most 8.")
    ] = None,
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
) -> None:
    """The codebook as a picture: usage histogram over a split, and every code decoded on its own."""
    from vqgen.tools.codebook import codebook_picture

    r = codebook_picture(
        vqvae, out, data=data, split=split, map_size=map_size, batch_size=batch_size, device=device, data_root=data_root
    )
    out_console.print(
        f"wrote {out}: {r['codes_used']}/{r['num_codes']} codes used on {r['split']} ({r['count']} images), "
        f"perplexity {r['perplexity']:.1f}, top-10 share {r['top10_share']:.1%}",
        soft_wrap=True,
    )


@app.command("curves")
@friendly_errors
def curves_cmd(
    log: Annotated[
        Path, typer.Argument(help="A metrics log (*.metrics.jsonl), or the checkpoint it was written beside.")
    ],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="PNG to write; default: beside the log, NAME.curves.png.")
    ] = None,
) -> None:
    """Training curves (loss, PSNR, perplexity, or NLL in bits per code) per epoch, as one PNG."""
    from vqgen.tools.curves import default_curves_path, metrics_log_for, write_curves

    metrics = metrics_log_for(log)
    written = write_curves(metrics, out or default_curves_path(metrics))
    out_console.print(f"wrote {written}", soft_wrap=True)


# ---------------------------------------------------------------------------- evaluation


@app.command("train-classifier")
@friendly_errors
def train_classifier_cmd(
    data: DataOpt = "mnist5k",
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Classifier file to write; default: checkpoints/classifier-<data>-<C>x<H>x<W>.safetensors "
            "(where evaluate looks for it beside checkpoints/*.safetensors).",
        ),
    ] = None,
    data_root: DataRootOpt = Path("data"),
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    width: Annotated[int, typer.Option("--width", help="Channels of the first conv layer (then 2x, 4x).")] = 16,
    epochs: EpochsOpt = 8,
    min_steps: Annotated[
        int, typer.Option("--min-steps", help="Train at least this many steps (more epochs on small datasets).")
    ] = 200,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 2e-3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train the reference classifier whose features `evaluate` measures distances in (labels, or a
    self-supervised transform task for unlabelled data)."""
    from vqgen.data import load_image_data
    from vqgen.stages.train_classifier import ClassifierTrainOptions, default_classifier_path, train_classifier

    images = load_image_data(
        data, image_size=image_size, channels=channels, split_seed=seed, val_fraction=val_fraction, root=data_root
    )
    describe_data(images)
    out = out or default_classifier_path(Path("checkpoints"), images.spec)
    opts = ClassifierTrainOptions(
        epochs=epochs, min_steps=min_steps, batch_size=batch_size, lr=lr, width=width, seed=seed, device=device
    )
    meta = train_classifier(images, opts, out, log=lambda text: info_console.print(text, highlight=False))
    task = "classes" if meta["task"] == "labels" else "self-supervised transforms"
    out_console.print(f"wrote {out}: val accuracy {meta['val_accuracy']:.2%} ({task}, {meta['train_seconds']:.0f}s)")


@app.command("evaluate")
@friendly_errors
def evaluate_cmd(
    vqvae: Annotated[
        Optional[Path], typer.Option("--vqvae", help="VQ-VAE checkpoint: reconstruction MSE/PSNR/SSIM, codebook use, FD/KID.")
    ] = None,
    codes: Annotated[
        Optional[Path], typer.Option("--codes", help="Code file: held-out codes for the prior, and its codebook audit.")
    ] = None,
    prior: Annotated[
        Optional[Path], typer.Option("--prior", help="Prior checkpoint: NLL in nats and bits per code, bits per dimension.")
    ] = None,
    samples: Annotated[
        Optional[Path], typer.Option("--samples", help="Folder written by `vqgen sample`: FD/KID vs real images, class scores.")
    ] = None,
    data: Annotated[
        Optional[str], typer.Option("--data", help="Dataset of the real images; default: the one the given files record.")
    ] = None,
    split: SplitOpt = "val",
    classifier: Annotated[
        Optional[Path],
        typer.Option("--classifier", help="Reference classifier; default: the cached one beside the checkpoints (trained if missing)."),
    ] = None,
    inception_weights: Annotated[
        Optional[Path],
        typer.Option(
            "--inception-weights",
            help="torchvision inception_v3 state dict (.safetensors) for the standard FID; default: none (not computed).",
        ),
    ] = None,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the results as JSON here; default: table only.")
    ] = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", help="Random subsets KID is averaged over.")] = 100,
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the real subsets and KID subsets.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Quality of whatever is given: reconstructions, prior likelihood, and samples vs real images."""
    import json

    from vqgen.checkpoint import atomic_write_text
    from vqgen.stages.evaluate import EvaluateRequest, evaluate, results_table

    request = EvaluateRequest(
        vqvae=vqvae, codes=codes, prior=prior, samples=samples, data=data, data_root=data_root, split=split,
        classifier=classifier, inception_weights=inception_weights, batch_size=batch_size, device=device, seed=seed,
        kid_subsets=kid_subsets,
    )
    results = evaluate(request, log=lambda text: info_console.print(text, highlight=False))
    out_console.print(results_table(results))
    fid = results.get("standard_fid")
    if fid and not fid["computed"]:
        info_console.print(fid["reason"], highlight=False)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(results, indent=2) + "\n")
        out_console.print(f"wrote {json_out}")


def main() -> None:
    app(prog_name="vqgen")


if __name__ == "__main__":
    sys.exit(main())
