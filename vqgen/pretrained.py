"""Trained models shipped with the package, usable by name wherever a checkpoint path is expected.

    vqgen sample mnist5k --label 7 --out sevens/       # the shipped prior (and its VQ-VAE)
    vqgen reconstruct mnist5k --out recon/              # the shipped VQ-VAE
    vqgen info mnist5k/prior                            # a kind-free command names the file
    vq, prior = vqgen.load_pretrained("mnist5k")

They are ordinary vqgen files (weights in float16, to keep the package small) trained with the long
recipe below, the cost paid once by us. ``python -m vqgen.pretrained`` retrains them from scratch
into ``vqgen/assets/pretrained/`` (about half an hour on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vqgen.config import (
    ClassifierTrainOptions,
    DataOptions,
    ExtractOptions,
    PixelCNNConfig,
    PriorTrainOptions,
    VQVAEConfig,
    VQVAE_PRESETS,
    VQVAETrainOptions,
    to_dict,
)
from vqgen.errors import VQGenError

NAMES = ("mnist5k",)
KINDS = ("vqvae", "prior", "classifier")
ASSETS = "vqgen.assets.pretrained"


@dataclass
class Recipe:
    """Everything the shipped models were trained with (``python -m vqgen.pretrained`` runs it)."""

    data: DataOptions = field(default_factory=DataOptions)
    # the shipped models were trained before the network sizes followed the data (VQVAEConfig.sized)
    vqvae: VQVAEConfig = field(
        default_factory=lambda: VQVAEConfig(hidden_channels=128, res_channels=64, head_channels=32, num_codes=512))
    # the shipped VQ-VAE was trained before the VQ-VAE's warm-up grew to 500 steps
    vqvae_train: VQVAETrainOptions = field(
        default_factory=lambda: VQVAETrainOptions(**VQVAE_PRESETS["best"], warmup_steps=100))
    # the shipped prior was trained before extract-codes added the codes of shifted copies of the images
    extract: ExtractOptions = field(default_factory=lambda: ExtractOptions(augment_copies=0))
    # ... and before the prior's head narrowed to 128 channels
    prior: PixelCNNConfig = field(
        default_factory=lambda: PixelCNNConfig(num_layers=15, head_channels=256, label_dropout=0.1))
    prior_train: PriorTrainOptions = field(default_factory=lambda: PriorTrainOptions(epochs=30, lr=1e-3))
    classifier_train: ClassifierTrainOptions = field(default_factory=ClassifierTrainOptions)


RECIPES = {"mnist5k": Recipe}


def file_name(name: str, kind: str) -> str:
    return f"{name}-{kind}.safetensors" if kind != "classifier" else f"classifier-{name}-1x28x28.safetensors"


def pretrained_path(name: str, kind: str) -> Path:
    """The shipped file of model ``name`` and ``kind`` (vqvae, prior or classifier)."""
    if name not in NAMES:
        raise VQGenError(f"{name}: no such shipped model (shipped: {', '.join(NAMES)})")
    path = Path(str(resources.files(ASSETS).joinpath(file_name(name, kind))))
    if not path.is_file():
        raise VQGenError(f"{path}: the shipped {name} {kind} is missing from this installation; "
                         "reinstall vqgen, or retrain it with python -m vqgen.pretrained")
    return path


def resolve(path: str | Path, kind: str | None = None) -> Path:
    """A file path as given, or the shipped file a name stands for.

    ``mnist5k`` is the shipped model of the expected ``kind``; ``mnist5k/prior`` names the kind itself
    (for commands such as ``info`` that take any file). An existing file of that name wins.
    """
    text = str(path)
    if Path(text).exists():
        return Path(text)
    name, _, named_kind = text.partition("/")
    if name in NAMES and (named_kind in KINDS or (not named_kind and kind)):
        return pretrained_path(name, named_kind or kind)
    return Path(text)


# ----------------------------------------------------------------------------- retraining


def shrink(source: Path, target: Path, meta_changes: dict[str, Any], half: bool = True) -> None:
    """Copy a vqgen file with its floating-point tensors in float16 and some metadata replaced."""
    from vqgen.formats.files import load_vqgen_file, save_vqgen_file

    tensors, meta = load_vqgen_file(source)
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {k: v for k, v in {**meta, **meta_changes}.items() if k != "format_version"}
    save_vqgen_file(target, tensors, meta)


def build(name: str, out_dir: Path, work: Path) -> None:
    """Train the shipped models of ``name`` from scratch in ``work``, then write their small copies to ``out_dir``."""
    from vqgen.formats.files import file_sha256
    from vqgen.data import load_image_data
    from vqgen.stages import extract_codes, train_prior, train_vqvae
    from vqgen.train.classifier import train_classifier

    recipe = RECIPES[name]()
    files = {kind: work / f"{kind}.safetensors" for kind in ("vqvae", "codes", "prior", "classifier")}
    steps = {  # a step whose file is already in ``work`` is not run again (an interrupted build goes on)
        "vqvae": lambda: train_vqvae.run(recipe.data, recipe.vqvae, recipe.vqvae_train, files["vqvae"]),
        "codes": lambda: extract_codes.run(files["vqvae"], files["codes"], augment=recipe.extract),
        "prior": lambda: train_prior.run(files["codes"], recipe.prior, recipe.prior_train, files["prior"]),
        "classifier": lambda: train_classifier(load_image_data(**to_dict(recipe.data)), recipe.classifier_train,
                                               files["classifier"]),
    }
    for kind, step in steps.items():
        if not files[kind].is_file():
            step()
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {kind: out_dir / file_name(name, kind) for kind in KINDS}
    shrink(files["vqvae"], targets["vqvae"], {"pretrained": name})
    shrink(files["prior"], targets["prior"], {"pretrained": name, "vqvae_path": targets["vqvae"].name,
                                              "vqvae_sha256": file_sha256(targets["vqvae"]), "codes_path": None})
    shrink(files["classifier"], targets["classifier"], {"pretrained": name}, half=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrain the models shipped with vqgen, from scratch.")
    parser.add_argument("--name", default="mnist5k", choices=NAMES)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "assets" / "pretrained")
    parser.add_argument("--work", type=Path, default=None,
                        help="Folder for the full-precision files (kept; steps whose file is there are skipped).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vqgen-pretrained-"))
    build(args.name, args.out, work)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
        print(f"wrote {args.out}/ (the full-precision files were in a temporary folder, now removed; "
              "pass --work DIR to keep them)")
    else:
        print(f"wrote {args.out}/ (full-precision files and logs in {work})")


if __name__ == "__main__":
    main()
