"""What the tools share: the data a VQ-VAE was trained on, its splits, and image references."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from vqgen.data import BUILTIN_DATASETS, SPLITS, ImageData, ImageFolder, fit_image, read_image, rebuild_data
from vqgen.errors import VQGenError

__all__ = ["SPLITS", "data_for_vqvae", "load_image_ref", "pick_split", "source_name", "vqvae_image_format"]


def vqvae_image_format(meta: dict[str, Any]) -> tuple[tuple[int, int], int]:
    """(height, width) and channel count a VQ-VAE checkpoint was trained on."""
    size = meta["image"]["size"]
    return (int(size[0]), int(size[1])), int(meta["image"]["channels"])


def data_for_vqvae(meta: dict[str, Any], data: str | None = None, root: str | Path = "data") -> ImageData:
    """The VQ-VAE's own dataset and split (or ``data`` with the same split settings), at its image format."""
    return rebuild_data(meta["dataset"], meta["image"], data, root)


def pick_split(images: ImageData, split: str) -> Dataset:
    """train, val, test (torchvision datasets) or all (every image, unsplit)."""
    return images.pick(split)


def source_name(dataset: Dataset, i: int) -> Path | None:
    """The file behind item ``i`` of a (possibly wrapped) folder dataset, relative to the folder; else None."""
    while True:
        if isinstance(dataset, Subset):
            dataset, i = dataset.dataset, dataset.indices[i]
        elif isinstance(dataset, ImageFolder):
            return Path(dataset.files[i])
        else:
            return None


REFERENCE = re.compile(r"(?P<data>.+):(?P<index>\d+)")


def load_image_ref(ref: str, meta: dict[str, Any], root: str | Path = "data") -> torch.Tensor:
    """An image file, or ``DATA:INDEX`` (the INDEX-th validation image of DATA), fitted to the VQ-VAE."""
    size, channels = vqvae_image_format(meta)
    path = Path(ref)
    if path.is_file():
        return fit_image(read_image(path, channels), size, channels)
    match = REFERENCE.fullmatch(ref)
    if match and (match["data"] in BUILTIN_DATASETS or Path(match["data"]).is_dir()):
        val = data_for_vqvae(meta, match["data"], root).val
        index = int(match["index"])
        if index >= len(val):
            raise VQGenError(f"{ref}: index out of range (the validation split of {match['data']} has {len(val)} images)")
        return val[index][0]
    if path.exists():
        raise VQGenError(f"{ref}: not an image file")
    raise VQGenError(
        f"{ref}: no such image file (or use DATA:INDEX for the INDEX-th validation image of a dataset, "
        f"e.g. mnist5k:0)"
    )
