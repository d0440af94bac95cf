"""Model checkpoints (kinds ``vqvae``, ``prior``, ``classifier``): the weights as tensors, and in the JSON the
config that rebuilds the model, the data it was trained on and the run's options and metrics.

* ``vqvae``: ``config`` (``VQVAEConfig``), ``dataset`` (the data spec), ``label_names``, ``image``
  (channels, size, pixel range), ``model_space``, ``latent_shape`` (and ``levels``, ``latent_shape_top``),
  ``epoch``, ``metrics``, ``train_options``;
* ``prior``: ``config`` (a prior config, or ``{"levels": 2, "top", "bottom"}``), what it keeps of its code
  file (``vqvae_path``, ``vqvae_sha256``, ``dataset``, ``label_names``, ``image``, ``latent_shape``,
  ``num_codes``, ``code_depth``, ``levels``), ``codes_path``, ``epoch``, ``metrics``, ``train_options``;
* ``classifier``: ``config``, ``task``, ``class_names``, ``label_names``, ``val_accuracy``, ``dataset``,
  ``image``, ``train_options``, ``epochs``, ``steps``, ``train_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vqgen import __version__
from vqgen.config import PriorTrainOptions, VQVAETrainOptions, prior_config_from_dict, to_dict
from vqgen.errors import VQGenError
from vqgen.formats.codes import CodeFile
from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.models import build_prior
from vqgen.models.classifier import Classifier, ClassifierConfig
from vqgen.models.vqvae import VQVAE, VQVAEConfig, level_shapes


def load_model(path: str | Path, kind: str, build: Callable[[dict[str, Any]], torch.nn.Module],
               device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a model file of ``kind`` -> (model built from its recorded config, in eval mode; metadata)."""
    tensors, meta = load_vqgen_file(path, kind)
    model = build(meta["config"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise VQGenError(f"{path}: weights do not match the recorded model configuration ({first})") from e
    return model.to(device).eval(), meta


def load_vqvae(path: str | Path, device: torch.device | str = "cpu"):
    """Load a VQ-VAE checkpoint -> (VQVAE in eval mode, metadata)."""
    return load_model(path, "vqvae", lambda cfg: VQVAE(VQVAEConfig.from_dict(cfg)), device)


def load_prior(path: str | Path, device: torch.device | str = "cpu"):
    """Load a prior checkpoint -> (its model in eval mode, metadata).

    The model is that of the recorded architecture (``config.arch``): a GatedPixelCNN or a
    TransformerPrior; files written before there was a choice hold a PixelCNN.
    """

    def build(cfg: dict[str, Any]) -> torch.nn.Module:
        try:
            return build_prior(prior_config_from_dict(cfg))
        except VQGenError as e:
            raise VQGenError(f"{path}: {e}") from None

    return load_model(path, "prior", build, device)


def load_classifier(path: str | Path, device: torch.device | str = "cpu"):
    """Load a classifier file -> (Classifier in eval mode, metadata)."""
    return load_model(path, "classifier", lambda cfg: Classifier(ClassifierConfig.from_dict(cfg)), device)


def image_record(channels: int, size: tuple[int, int]) -> dict[str, Any]:
    """The ``image`` entry of a file: what images its model takes (pixels in [0, 1])."""
    return {"channels": channels, "size": list(size), "pixel_range": [0, 1]}


def save_vqvae(out: Path, model: VQVAE, data: Any, metrics: dict[str, Any], opts: VQVAETrainOptions) -> None:
    """Write a VQ-VAE checkpoint; ``data`` is the ``ImageData`` it was trained on."""
    meta = {
        "kind": "vqvae",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        "dataset": data.spec,
        "label_names": data.label_names,
        "image": image_record(data.channels, data.image_size),
        "model_space": f"[-1, 1] (x * 2 - 1); reconstruction loss is {opts.gan.recon_loss.upper()} there",
        "latent_shape": list(model.cfg.latent_shape),
        **level_shapes(model.cfg),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": to_dict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)


PRIOR_KEEPS = ("vqvae_path", "vqvae_sha256", "dataset", "label_names", "image", "latent_shape", "num_codes",
               "code_depth")  # what a prior file copies from its code file's metadata


def save_prior(out: Path, model: torch.nn.Module, codes: CodeFile, metrics: dict[str, Any],
               opts: PriorTrainOptions) -> None:
    """Write a prior checkpoint for a model trained on ``codes``."""
    codes_meta, levels = codes.meta, codes.levels
    meta = {
        "kind": "prior",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        **{k: codes_meta.get(k) for k in PRIOR_KEEPS},
        "levels": levels,
        **({"latent_shape_top": codes_meta["latent_shape_top"]} if levels == 2 else {}),
        "codes_path": str(Path(codes.path).resolve()),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": to_dict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)


def save_classifier(out: Path, model: Classifier, record: dict[str, Any]) -> dict[str, Any]:
    """Write a classifier file with ``record`` (task, class names, data, accuracy, ...); returns its metadata."""
    meta = {"kind": "classifier", "vqgen_version": __version__, "config": model.cfg.to_dict(), **record}
    save_vqgen_file(out, model.state_dict(), meta)
    return meta
