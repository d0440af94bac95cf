"""The ``vqgen`` command line: a thin Typer layer over the stages."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from vqgen.cli_options import options_from
from vqgen.config import (
    ClassifierTrainOptions,
    DataOptions,
    GanOptions,
    PixelCNNConfig,
    PriorTrainOptions,
    VQVAEConfig,
    VQVAETrainOptions,
    to_dict,
)
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


def single_process(command: str) -> None:
    """Commands that are not sharded refuse to run under torchrun (vqgen.distributed.refuse_under_torchrun)."""
    from vqgen.distributed import refuse_under_torchrun

    refuse_under_torchrun(command)


def check_output(path: Path) -> None:
    from vqgen.checkpoint import check_output_path

    check_output_path(path)


# ---------------------------------------------------------------------------- shared options

DataRootOpt = Annotated[Path, typer.Option("--data-root", help="Where torchvision datasets are downloaded.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed (CPU runs repeat exactly).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
ResumeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--resume",
        help="Continue a stopped run from a resume file, or 'auto' for this --out's OUT.resume.safetensors "
        "(starts fresh when there is none). \\[default: start fresh]",
    ),
]


def out_option(what: str) -> Any:
    return typer.Option("--out", help=f"{what} to write (.safetensors).")


# ---------------------------------------------------------------------------- stage 1


@app.command("train-vqvae")
@friendly_errors
@options_from(DataOptions, VQVAEConfig, VQVAETrainOptions, GanOptions)
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
    from vqgen.train.vqvae import train_vqvae_on

    vqvae_train_options.gan = gan_options
    m = train_vqvae_on(data_options, vqvae_config, vqvae_train_options, out, resume=resume)
    out_console.print(
        f"wrote {out}: val PSNR {m['val_psnr']:.2f} dB, perplexity {m['val_perplexity']:.1f}, "
        f"codes used {m['val_codes_used']}/{m['val_num_codes']}"
    )


# ---------------------------------------------------------------------------- stage 2


@app.command("extract-codes")
@friendly_errors
def extract_codes_cmd(
    vqvae: Annotated[Path, typer.Argument(help="VQ-VAE checkpoint from train-vqvae.")],
    data: Annotated[
        Optional[str], typer.Option("--data", help="Dataset to encode; default: the one the VQ-VAE was trained on.")
    ] = None,
    out: Annotated[Path, out_option("Code file")] = Path("checkpoints/codes.safetensors"),
    data_root: DataRootOpt = Path("data"),
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
) -> None:
    """Stage 2: encode a dataset into code maps (both splits, with labels) in one file."""
    single_process("extract-codes")
    from vqgen.stages.extract_codes import extract_codes_for

    result = extract_codes_for(vqvae, out, data=data, data_root=data_root, batch_size=batch_size, device=device)
    print_codebook_audit(result)
    top = result.get("latent_shape_top")
    out_console.print(
        f"wrote {out}: {result['num_train']} train + {result['num_val']} val code maps of "
        f"{result['latent_shape'][0]}x{result['latent_shape'][1]}"
        + (f" (bottom) and {top[0]}x{top[1]} (top)" if top else "") + f", K={result['num_codes']}"
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


@app.command("train-prior")
@friendly_errors
@options_from(PixelCNNConfig, PriorTrainOptions)
def train_prior_cmd(
    codes: Annotated[Path, typer.Argument(help="Code file from extract-codes.")],
    out: Annotated[Path, out_option("Prior checkpoint")] = Path("checkpoints/prior.safetensors"),
    conditional: Annotated[
        Optional[bool],
        typer.Option("--conditional/--unconditional", help="Class-conditional prior; default: on when codes have labels."),
    ] = None,
    resume: ResumeOpt = None,
    *,
    pixel_cnn_config: PixelCNNConfig,
    prior_train_options: PriorTrainOptions,
) -> None:
    """Stage 3: fit a gated PixelCNN prior to the code maps."""
    from vqgen.train.prior import train_prior_on

    m = train_prior_on(codes, pixel_cnn_config, prior_train_options, out, conditional=conditional, resume=resume)
    out_console.print(
        f"wrote {out}: best val {m['best_val_bits_per_code']:.3f} bits/code (last epoch {m['val_bits_per_code']:.3f})"
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
    single_process("sample")
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
SplitOpt = Annotated[
    str,
    typer.Option(
        "--split",
        help="train, val, test (mnist/fashion-mnist/cifar10: the official test split) or all (every image, unsplit; "
        "e.g. a folder kept for testing).",
    ),
]


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
    single_process("reconstruct")
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
    single_process("interpolate")
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
    single_process("info")
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
    single_process("codebook")
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
    single_process("curves")
    from vqgen.tools.curves import default_curves_path, metrics_log_for, write_curves

    metrics = metrics_log_for(log)
    written = write_curves(metrics, out or default_curves_path(metrics))
    out_console.print(f"wrote {written}", soft_wrap=True)


# ---------------------------------------------------------------------------- evaluation


@app.command("train-classifier")
@friendly_errors
@options_from(DataOptions, ClassifierTrainOptions, skip=("skip_bad_images",))
def train_classifier_cmd(
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Classifier file to write; default: checkpoints/classifier-<data>-<C>x<H>x<W>.safetensors "
            "(where evaluate looks for it beside checkpoints/*.safetensors).",
        ),
    ] = None,
    resume: ResumeOpt = None,
    *,
    data_options: DataOptions,
    classifier_train_options: ClassifierTrainOptions,
) -> None:
    """Train the reference classifier whose features `evaluate` measures distances in (labels, or a
    self-supervised transform task for unlabelled data)."""
    single_process("train-classifier")
    from vqgen.data import load_image_data
    from vqgen.train.classifier import default_classifier_path, train_classifier
    from vqgen.train.vqvae import describe_data

    if out is not None:
        check_output(out)
    images = load_image_data(**to_dict(data_options))
    describe_data(images)
    out = out or default_classifier_path(Path("checkpoints"), images.spec)
    meta = train_classifier(images, classifier_train_options, out, resume=resume)
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
        Optional[Path], typer.Option("--prior", help="Prior checkpoint: NLL, bits per code and dimension, vs the code histogram.")
    ] = None,
    samples: Annotated[
        Optional[Path],
        typer.Option(
            "--samples", help="Folder written by `vqgen sample`: FD/KID, precision/recall vs real images, class scores."
        ),
    ] = None,
    data: Annotated[
        Optional[str], typer.Option("--data", help="Dataset of the real images; default: the one the given files record.")
    ] = None,
    split: SplitOpt = "val",
    classifier: Annotated[
        Optional[Path],
        typer.Option(
            "--classifier",
            help="Reference classifier; default: the cached classifier-<data>-<C>x<H>x<W>.safetensors beside the "
            "checkpoints.",
        ),
    ] = None,
    train_classifier: Annotated[
        bool,
        typer.Option(
            "--train-classifier",
            help="Train the reference classifier when none fits, and cache it; default: fail, saying how to train it.",
        ),
    ] = False,
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
    single_process("evaluate")
    from vqgen.eval import EvaluateRequest, evaluate, results_table, write_json

    request = EvaluateRequest(
        vqvae=vqvae, codes=codes, prior=prior, samples=samples, data=data, data_root=data_root, split=split,
        classifier=classifier, train_classifier=train_classifier, inception_weights=inception_weights,
        json_out=json_out, batch_size=batch_size, device=device, seed=seed, kid_subsets=kid_subsets,
    )
    if request.json_out is not None:
        check_output(request.json_out)
    results = evaluate(request, log=lambda text: info_console.print(text, highlight=False))
    out_console.print(results_table(results))
    fid = results.get("standard_fid")
    if fid and not fid["computed"]:
        info_console.print(fid["reason"], highlight=False)
    if request.json_out is not None:
        write_json(results, request.json_out)
        out_console.print(f"wrote {request.json_out}")


def main() -> None:
    app(prog_name="vqgen")


if __name__ == "__main__":
    sys.exit(main())
