"""What the tools share: the data a VQ-VAE was trained on, image references, batched encoding."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vqgen.data import BUILTIN_DATASETS, ImageData, fit_image, image_data_from_spec, read_image
from vqgen.errors import VQGenError

SPLITS = ("train", "val")


class Fitted(Dataset):
    """A dataset whose images are resized/converted to what a VQ-VAE expects."""

    def __init__(self, dataset: Dataset, size: tuple[int, int], channels: int):
        self.dataset, self.size, self.channels = dataset, size, channels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i]
        return fit_image(image, self.size, self.channels), label


def vqvae_image_format(meta: dict[str, Any]) -> tuple[tuple[int, int], int]:
    """(height, width) and channel count a VQ-VAE checkpoint was trained on."""
    size = meta["image"]["size"]
    return (int(size[0]), int(size[1])), int(meta["image"]["channels"])


def data_for_vqvae(meta: dict[str, Any], data: str | None = None, root: str | Path = "data") -> ImageData:
    """The VQ-VAE's own dataset and split (or ``data`` with the same split settings), at its image format."""
    size, channels = vqvae_image_format(meta)
    spec = dict(meta["dataset"])
    if data is not None and data != spec["data"]:
        spec["data"] = data
        spec["image_size"] = size[0] if size[0] == size[1] else None
    spec["channels"] = channels
    images = image_data_from_spec(spec, root=root)
    images.train = Fitted(images.train, size, channels)
    images.val = Fitted(images.val, size, channels)
    images.channels, images.image_size = channels, size
    return images


def pick_split(images: ImageData, split: str) -> Dataset:
    if split not in SPLITS:
        raise VQGenError(f"--split must be train or val, not {split!r}")
    return images.train if split == "train" else images.val


def source_name(dataset: Dataset, i: int) -> Path | None:
    """The file behind item ``i`` of a (possibly wrapped) folder dataset, relative to the folder; else None."""
    from vqgen.data import ImageFolder, Subset

    while True:
        if isinstance(dataset, Fitted):
            dataset = dataset.dataset
        elif isinstance(dataset, Subset):
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


def batches(tensor: torch.Tensor, batch_size: int):
    for start in range(0, len(tensor), batch_size):
        yield tensor[start : start + batch_size]
