"""Datasets behind ``--data``: the shipped mnist5k, torchvision's MNIST/Fashion-MNIST/CIFAR-10, or a folder.

``load_image_data`` returns the train and validation splits (validation is carved, seeded by
``split_seed``, out of the training images of every source), the official test split where
there is one, every image unsplit (split "all"), and a JSON-able ``spec`` that later stages
use to rebuild exactly the same data and split (``image_data_from_spec``), checking by digest
that it is still the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset, Subset

from vqgen.data.sources import (
    BUILTIN_DATASETS,
    DECODE_ERRORS,
    GREY_MODES,
    IMAGE_EXTENSIONS,
    TORCHVISION_DATASETS,
    ImageFolder,
    Source,
    TensorImages,
    list_image_files,
    open_source,
    read_image,
    square_size,
)
from vqgen.data.split import contents_mismatch, split_digest, spread, stratified_split
from vqgen.data.transforms import fit_image, resize_crop, to_channels
from vqgen.config import SPLITS
from vqgen.errors import VQGenError
from vqgen.logs import say

__all__ = [
    "BUILTIN_DATASETS", "DECODE_ERRORS", "GREY_MODES", "IMAGE_EXTENSIONS", "SPLITS", "TORCHVISION_DATASETS",
    "ImageData", "ImageFolder", "Subset", "TensorImages", "fit_image", "image_data_from_spec", "list_image_files",
    "load_image_data", "read_image", "resize_crop", "split_digest", "spread", "stratified_split", "to_channels",
]  # fmt: skip

LEGACY_SPLIT = "official train/test"  # specs of older vqgen versions: val was torchvision's test split


@dataclass
class ImageData:
    train: Dataset
    val: Dataset
    spec: dict[str, Any]
    label_names: list[str] | None
    channels: int
    image_size: tuple[int, int]  # (height, width)
    test: Dataset | None = None  # torchvision's official test split; None for mnist5k and folders
    all: Dataset | None = None  # every image, unsplit (a folder: in sorted path order; torchvision: train then test)

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.label_names else 0

    def describe(self) -> str:
        """One line: the dataset, split sizes, image shape and labels."""
        h, w = self.image_size
        labels = f"{self.num_classes} classes" if self.label_names else "unlabelled"
        test = f" / {len(self.test)} test" if self.test is not None else ""
        return (f"data {self.spec['data']}: {len(self.train)} train / {len(self.val)} val{test} images, "
                f"{self.channels}x{h}x{w}, {labels}")

    def pick(self, split: str) -> Dataset:
        """The dataset of one split: train, val, test or all."""
        if split not in SPLITS:
            raise VQGenError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
        chosen = getattr(self, split)
        if chosen is None:
            if split == "test":
                raise VQGenError(
                    f"--split test: {self.spec.get('data')} has no test split (only "
                    f"{', '.join(TORCHVISION_DATASETS)} have one); use val, or all to take every image of a folder"
                )
            raise VQGenError(f"--split {split}: not available for {self.spec.get('data')}")
        return chosen


def load_image_data(
    data: str = "mnist5k",
    *,
    image_size: int | tuple[int, int] | list[int] | None = None,
    channels: int | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    root: str | Path = "data",
    skip_bad_images: bool = False,
) -> ImageData:
    """Open the dataset named by ``data`` and split its training images into train and validation sets.

    ``image_size``: one side (square images) or (height, width); None keeps the native size.
    A folder is searched recursively for files with image extensions; hidden files and folders
    (``.name``) are skipped, other files are ignored and counted in a note.
    """
    if channels not in (None, 1, 3):
        raise VQGenError(f"--channels must be 1 or 3, not {channels}")
    if image_size is not None and min(square_size(image_size)) < 1:
        raise VQGenError(f"--image-size must be positive, not {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise VQGenError(f"--val-fraction must be between 0 and 1, not {val_fraction}")
    spec = {
        "data": data,
        "image_size": image_size,
        "channels": channels,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "skip_bad_images": skip_bad_images,
    }
    source = open_source(spec, Path(root), skip_bad_images)
    train_idx, val_idx = stratified_split(source.labels, val_fraction, split_seed)
    return _assemble(spec, source, Subset(source.pool, train_idx), Subset(source.pool, val_idx))


def rebuild_data(spec: dict[str, Any], image: dict[str, Any] | None = None, data: str | None = None,
                 root: str | Path = "data", force_shape: bool = True) -> ImageData:
    """The data a file records (its ``dataset`` spec), or ``data`` split the same way; with ``force_shape`` at
    the file's ``image`` size and channels (what its model takes), else at the shape the spec itself gives."""
    spec = dict(spec)
    if data is not None:
        spec["data"] = data
    if image is not None and force_shape:
        spec["image_size"], spec["channels"] = list(image["size"]), image["channels"]
    return image_data_from_spec(spec, root=root)


def image_data_from_spec(spec: dict[str, Any], root: str | Path = "data") -> ImageData:
    """Rebuild the data (same images, same split) that a checkpoint was trained on.

    Refuses (one line) when the recorded digest shows other contents: a folder with files added,
    removed or renamed since, or another split. ``spec["data"]`` replaced by other data (``--data``)
    is not compared. Specs of older versions, which record no digest, load unchecked.
    """
    keys = ("image_size", "channels", "split_seed", "val_fraction")
    images = load_image_data(
        spec["data"], root=root, skip_bad_images=bool(spec.get("skip_bad_images")), **{k: spec[k] for k in keys}
    )
    if spec.get("split") == LEGACY_SPLIT and images.test is not None:
        images = _legacy_split(images)
    recorded, found = spec.get("contents"), images.spec["contents"]
    if recorded is None:
        if "num_files" in images.spec:
            say(f"note: {found['data']}: the checkpoint records no digest of the folder (older vqgen); not checked")
    elif recorded.get("data") == found["data"]:
        reason = contents_mismatch(recorded, found)
        if reason:
            raise VQGenError(reason)
    return images


def _assemble(spec: dict[str, Any], source: Source, train: Subset, val: Subset) -> ImageData:
    everything = source.pool if source.test is None else ConcatDataset([source.pool, source.test])
    spec = {**spec, "data": source.name}
    if source.files_sha256 is not None:  # a folder
        spec["num_files"] = len(source.pool)
        identity = {"num_files": len(source.pool), "files_sha256": source.files_sha256}
    else:
        identity = {"num_images": len(source.pool)}
    spec["resolved_image_size"], spec["resolved_channels"] = list(source.size), source.channels
    spec["num_train"], spec["num_val"] = len(train), len(val)
    if source.test is not None:
        spec["num_test"] = len(source.test)
    # what image_data_from_spec compares, to refuse data that changed since the checkpoint was made
    spec["contents"] = {
        "data": source.name,
        **identity,
        "split_sha256": split_digest(list(train.indices), list(val.indices)),
    }
    return ImageData(
        train, val, spec, source.label_names, source.channels, source.size, test=source.test, all=everything
    )


def _legacy_split(images: ImageData) -> ImageData:
    """An older checkpoint's torchvision split: all training images to train, the official test split as val."""
    name = images.spec["data"]
    say(f"note: {name}: this checkpoint's validation split is the official test split (older vqgen); kept so")
    pool = images.train.dataset
    train, val = Subset(pool, list(range(len(pool)))), images.test
    spec = {**images.spec, "split": LEGACY_SPLIT, "num_train": len(train), "num_val": len(val)}
    spec["contents"] = {**spec["contents"], "split_sha256": split_digest(train.indices, [])}
    return ImageData(train, val, spec, images.label_names, images.channels, images.image_size, images.test, images.all)
