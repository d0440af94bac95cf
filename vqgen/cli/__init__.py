"""The ``vqgen`` command line: a thin Typer layer over the stages.

The options of the training commands are made from the config dataclasses (``vqgen.cli.options``);
the commands live in ``pipeline`` (the four stages) and ``tools`` (everyday tools and evaluation),
and only parse and call. Importing the command line needs no torch.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from vqgen.config import DATA, DEVICE, OUTPUT, TRAINING
from vqgen.errors import VQGenError
from vqgen.pretrained import resolve

app = typer.Typer(
    help="Two-stage discrete generative modelling of images: VQ-VAE + autoregressive prior (gated PixelCNN or "
    "transformer).\n\n"
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
    from vqgen.formats.files import check_output_path

    check_output_path(path)


def model_file(text: str, kind: str | None = None) -> Path:
    """A path, or the name of a shipped model (vqgen.pretrained); a missing shipped file is a usage error."""
    try:
        return resolve(text, kind)
    except VQGenError as e:
        raise typer.BadParameter(str(e)) from None


def vqvae_path(text: str) -> Path:
    return model_file(text, "vqvae")


def prior_path(text: str) -> Path:
    return model_file(text, "prior")


VQVAEArg = Annotated[
    Path, typer.Argument(help="VQ-VAE checkpoint from train-vqvae, or a shipped model: mnist5k.", parser=vqvae_path)
]


# ---------------------------------------------------------------------------- shared options

DataRootOpt = Annotated[
    Path, typer.Option("--data-root", help="Where torchvision datasets are downloaded.", rich_help_panel=DATA)
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed (CPU runs repeat exactly).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.", rich_help_panel=DEVICE)]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.", rich_help_panel=DEVICE)]
ResumeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--resume",
        help="Continue a stopped run from a resume file, or 'auto' for this --out's OUT.resume.safetensors "
        "(starts fresh when there is none). \\[default: start fresh]",
        rich_help_panel=TRAINING,
    ),
]


def out_option(what: str) -> Any:
    return typer.Option("--out", help=f"{what} to write (.safetensors).", rich_help_panel=OUTPUT)


def main() -> None:
    app(prog_name="vqgen")



from vqgen.cli import pipeline, tools  # noqa: E402,F401  (registers the commands)
