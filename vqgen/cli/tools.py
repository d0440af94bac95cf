"""Everyday tools (reconstruct, interpolate, edit, info, codebook, curves) and evaluation (train-classifier,
evaluate)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from vqgen.cli import (
    BatchOpt, DataRootOpt, DeviceOpt, ResumeOpt, VQVAEArg, app, check_output, friendly_errors, info_console,
    model_file, out_console, prior_path, single_process, vqvae_path,
)
from vqgen.cli.options import options_from
from vqgen.config import (
    DATA, MODEL, OUTPUT, SPLIT_HELP, ClassifierTrainOptions, DataOptions, EvaluateRequest, SampleOptions, to_dict,
)

# ---------------------------------------------------------------------------- everyday tools

ToolDataOpt = Annotated[
    Optional[str],
    typer.Option("--data", help="Dataset (as for train-vqvae); default: the one the VQ-VAE was trained on.",
                 rich_help_panel=DATA),
]
SplitOpt = Annotated[str, typer.Option("--split", help=SPLIT_HELP, rich_help_panel=DATA)]


@app.command("reconstruct")
@friendly_errors
def reconstruct_cmd(
    vqvae: VQVAEArg,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for grid.png, images/ (one PNG per input) and metrics.json.",
                           rich_help_panel=OUTPUT)
    ] = Path("reconstructions"),
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
        Path, typer.Option("--out", help="Strip PNG of the encoder-space walk; the code-swap walk goes to OUT.codes.png.",
                           rich_help_panel=OUTPUT)
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


@app.command("edit")
@friendly_errors
@options_from(SampleOptions, skip=("n", "label", "sampler", "batch_size", "residual_temperature"))
def edit_cmd(
    image: Annotated[str, typer.Argument(help="The image: a file, or DATA:INDEX (e.g. mnist5k:0, a validation image).")],
    box: Annotated[
        str, typer.Option("--box", help="x0,y0,x1,y1: the pixels to redraw (x1, y1 excluded), in the image as the "
                          "VQ-VAE sees it (resized and cropped to its size); every code whose cell they touch is redrawn.")
    ],
    prior: Annotated[
        Path, typer.Option("--prior", help="A masked prior (train-prior --arch masked).", parser=prior_path,
                           rich_help_panel=MODEL)
    ],
    n: Annotated[int, typer.Option("--n", help="How many edits to draw.")] = 8,
    label: Annotated[
        Optional[str], typer.Option("--label", help="Class index or name to redraw towards; default: no class (the "
                                    "prior's unconditional mode).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the edits (NNNN.png), original.png, grid.png (original, "
                           "reconstruction, edits) and codes.safetensors.", rich_help_panel=OUTPUT)
    ] = Path("edits"),
    vqvae: Annotated[
        Optional[Path],
        typer.Option("--vqvae", help="VQ-VAE to encode and decode with; default: the one recorded in the prior.",
                     parser=vqvae_path, rich_help_panel=MODEL),
    ] = None,
    data_root: DataRootOpt = Path("data"),
    *,
    sample_options: SampleOptions,
) -> None:
    """Redraw a box of an image with a masked prior: its codes under the box hidden and drawn again, the rest kept."""
    single_process("edit")
    from vqgen.tools.edit import edit

    r = edit(prior, image, box, out, n, label, vqvae_path=vqvae, options=sample_options, data_root=data_root)
    out_console.print(f"wrote {r['count']} edits of {image} ({r['codes_redrawn']} codes redrawn) to {out}/ "
                      f"(side by side: {r['grid']})", soft_wrap=True)


@app.command("info")
@friendly_errors
def info_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="Any file vqgen wrote: VQ-VAE, prior, codes, samples, ...; or a shipped model's file: "
                       "mnist5k/vqvae, mnist5k/prior.", parser=model_file),
    ],
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
    out: Annotated[Path, typer.Option("--out", help="PNG to write.", rich_help_panel=OUTPUT)] = Path("codebook.png"),
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
            rich_help_panel=OUTPUT,
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

    if out is not None:
        check_output(out)
    images = load_image_data(**to_dict(data_options))
    info_console.print(images.describe(), highlight=False)
    out = out or default_classifier_path(Path("checkpoints"), images.spec)
    meta = train_classifier(images, classifier_train_options, out, resume=resume)
    task = "classes" if meta["task"] == "labels" else "self-supervised transforms"
    out_console.print(f"wrote {out}: val accuracy {meta['val_accuracy']:.2%} ({task}, {meta['train_seconds']:.0f}s)")


@app.command("evaluate")
@friendly_errors
@options_from(EvaluateRequest)
def evaluate_cmd(*, evaluate_request: EvaluateRequest) -> None:
    """Quality of whatever is given: reconstructions, prior likelihood, and samples vs real images."""
    single_process("evaluate")
    from vqgen.eval import evaluate, results_table, write_json

    request = replace(evaluate_request, vqvae=evaluate_request.vqvae and model_file(str(evaluate_request.vqvae), "vqvae"),
                      prior=evaluate_request.prior and model_file(str(evaluate_request.prior), "prior"))
    if request.json_out is not None:
        check_output(request.json_out)
    results = evaluate(request, log=lambda text: info_console.print(text, highlight=False))
    out_console.print(results_table(results))
    inception = results.get("torchvision_inception")
    if inception and not inception["computed"]:
        info_console.print(inception["reason"], highlight=False)
    if request.json_out is not None:
        write_json(results, request.json_out)
        out_console.print(f"wrote {request.json_out}")
