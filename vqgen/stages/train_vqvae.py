"""Stage 1, `vqgen train-vqvae`: open the data, size the VQ-VAE to it, train (``vqgen.train.vqvae``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vqgen import distributed as dist
from vqgen.config import DataOptions, VQVAEConfig, VQVAETrainOptions, to_dict
from vqgen.data import load_image_data
from vqgen.device import resolve_device
from vqgen.formats.files import check_output_path
from vqgen.logs import say
from vqgen.train.vqvae import train_vqvae


def run(data_options: DataOptions, vqvae_config: VQVAEConfig, train_options: VQVAETrainOptions, out: Path,
        resume: str | None = None) -> dict[str, Any]:
    """Train a VQ-VAE on the data ``data_options`` name (one download per machine); returns the last epoch's
    metrics. The options are checked before any data is read; the image size and channels come from the data, and
so do the options left to the image kind (``VQVAETrainOptions.settled_for``, recorded in the checkpoint)."""
    train_options.validate()
    vqvae_config.validate_quantizer()
    check_output_path(out)
    dist.setup(resolve_device(train_options.device))  # under torchrun: join now, so one process per machine downloads
    with dist.local_main_first():
        data = load_image_data(**to_dict(data_options))
    say(data.describe())
    vqvae_config = replace(vqvae_config, in_channels=data.channels, image_size=data.image_size)
    vqvae_config.validate()
    return train_vqvae(data, vqvae_config, train_options, Path(out), resume)
