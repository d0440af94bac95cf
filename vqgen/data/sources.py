"""The images behind ``--data``: the shipped mnist5k, torchvision's MNIST/Fashion-MNIST/CIFAR-10, or a folder.

Each source yields a pool of ``(image, label)`` items (``image`` a float tensor (C, H, W) in
[0, 1], ``label`` an int, -1 when unlabelled) that the train/validation split is carved from,
plus, for torchvision datasets, the official test split kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vqgen.data.split import files_digest
from vqgen.data.transforms import fit_image, to_channels
from vqgen.errors import VQGenError
from vqgen.logs import say, warn

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
BUILTIN_DATASETS = ("mnist5k", *TORCHVISION_DATASETS)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CACHE_BYTES = 512 * 2**20  # decoded images an image folder keeps in memory, per process (and per loader worker)


@dataclass
class Source:
    name: str  # as recorded in the spec ("mnist5k", "cifar10", or the folder's path)
    pool: Dataset  # what the train/val split is carved from
    labels: list[int]  # of the pool's items (-1: unlabelled)
    label_names: list[str] | None
    channels: int
    size: tuple[int, int]  # (height, width)
    test: Dataset | None = None  # torchvision's official test split
    files_sha256: str | None = None  # a folder: digest of its files' relative paths


def open_source(spec: dict[str, Any], root: Path, skip_bad_images: bool) -> Source:
    """The images ``spec["data"]`` names, at ``spec``'s size and channel count (None: native)."""
    data = spec["data"]
    if data == "mnist5k":
        return mnist5k(spec)
    if data in TORCHVISION_DATASETS:
        return torchvision_source(spec, root)
    path = Path(data)
    if not path.exists():
        names = ", ".join(BUILTIN_DATASETS)
        raise VQGenError(f"{data}: no such folder (and not a built-in dataset: {names})")
    if not path.is_dir():
        raise VQGenError(f"{data}: not a folder of images")
    return image_folder(spec, path, skip_bad_images)


class TensorImages(Dataset):
    """Images held in memory as uint8 (N, H, W) or (N, C, H, W)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], channels: int):
        self.images = images if images.dim() == 4 else images[:, None]
        self.labels = labels.long()
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].float() / 255.0
        return fit_image(image, self.size, self.channels), int(self.labels[i])


# ----------------------------------------------------------------------------- built-in datasets


def mnist5k(spec: dict[str, Any]) -> Source:
    with resources.files("vqgen.assets").joinpath("mnist5k.npz").open("rb") as f:
        arrays = np.load(f)
        images, labels = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])
    size = square_size(spec["image_size"]) or (28, 28)
    channels = spec["channels"] or 1
    _note_conversion("mnist5k", 1, channels)
    pool = TensorImages(images, labels, size, channels)
    return Source("mnist5k", pool, labels.tolist(), [str(d) for d in range(10)], channels, size)


def torchvision_class(name: str) -> type:
    """torchvision's dataset class for ``name`` (tests replace this: torchvision needs the network)."""
    import torchvision

    return getattr(torchvision.datasets, TORCHVISION_DATASETS[name])


def torchvision_source(spec: dict[str, Any], root: Path) -> Source:
    """The official training split is the pool; the official test split is kept as ``test``."""
    name = spec["data"]
    cls = torchvision_class(name)
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, OSError... when offline
        raise VQGenError(
            f"{name}: could not download into {root}/ ({type(e).__name__}: {e}); "
            "check the network, or use --data mnist5k (shipped) or a folder of images"
        ) from e
    arrays = []
    for ds in (train, test):
        images = torch.as_tensor(np.asarray(ds.data))
        if images.dim() == 4:  # CIFAR: (N, H, W, C)
            images = images.permute(0, 3, 1, 2)
        arrays.append((images, torch.as_tensor(np.asarray(ds.targets))))
    native_channels = 1 if arrays[0][0].dim() == 3 else arrays[0][0].shape[1]
    channels = spec["channels"] or native_channels
    _note_conversion(name, native_channels, channels)
    size = square_size(spec["image_size"]) or tuple(arrays[0][0].shape[-2:])
    pool, test_set = (TensorImages(images, labels, size, channels) for images, labels in arrays)
    labels = arrays[0][1].tolist()
    return Source(name, pool, labels, list(train.classes), channels, size, test=test_set)


# ----------------------------------------------------------------------------- folders


class ImageFolder(Dataset):
    """Image files, decoded and fitted to ``size`` on first access, then kept in memory while the kept images
    fit ``cache_bytes`` (a folder of a few thousand small images is decoded once, not every epoch); labels from
    first-level subfolders (or -1)."""

    def __init__(self, files: list[Path], labels: list[int], size: tuple[int, int], channels: int,
                 cache_bytes: int = CACHE_BYTES):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.cache_bytes, self.cached_bytes = cache_bytes, 0
        self.cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.cache.get(i)
        if image is None:
            image = fit_image(read_image(self.files[i], self.channels), self.size, self.channels)
            nbytes = image.numel() * image.element_size()
            if self.cached_bytes + nbytes <= self.cache_bytes:
                self.cache[i], self.cached_bytes = image, self.cached_bytes + nbytes
        return image.clone(), self.labels[i]


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Decode one image file into a (channels, H, W) float tensor in [0, 1] (colour to grey by luma)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in GREY_MODES else "RGB")
            array = np.asarray(im, dtype=np.uint8).copy()
    except DECODE_ERRORS as e:
        raise VQGenError(f"{path}: cannot decode image ({e})") from e
    tensor = torch.from_numpy(array).float() / 255.0
    return to_channels(tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1), channels)


def _decode_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


DECODE_ERRORS = _decode_errors()


def list_image_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(files with an image extension, other files) under ``root``, sorted; hidden files and folders skipped."""
    images, others = [], []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others


def image_folder(spec: dict[str, Any], root: Path, skip_bad_images: bool) -> Source:
    files, others = list_image_files(root)
    if not files:
        found = f" (only {len(others)} other files, e.g. {others[0].name})" if others else ""
        raise VQGenError(
            f"{root}: no images found{found}; looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively"
        )
    if others:
        say(f"note: {root}: ignored {len(others)} file(s) without an image extension (e.g. {others[0].name})")
    files, sizes, modes = _decodable(root, files, skip_bad_images)
    label_names, labels = _folder_labels(root, files)
    if spec["image_size"] is None:
        if len(set(sizes)) > 1:
            odd = next(i for i, s in enumerate(sizes) if s != sizes[0])
            (w1, h1), (w2, h2) = sizes[0], sizes[odd]
            raise VQGenError(
                f"{root}: images have different sizes ({files[0].name} is {w1}x{h1}, {files[odd].name} is {w2}x{h2}); "
                "pass --image-size to resize them"
            )
        size = (sizes[0][1], sizes[0][0])
    else:
        size = square_size(spec["image_size"])
    native = 1 if all(m in GREY_MODES for m in modes) else 3
    channels = spec["channels"] or native
    _note_conversion(str(root), native, channels)
    pool = ImageFolder(files, labels, size, channels)
    return Source(str(root), pool, labels, label_names, channels, size, files_sha256=files_digest(root, files))


def _decodable(root: Path, files: list[Path], skip_bad_images: bool) -> tuple[list[Path], list, list[str]]:
    """Decode every file once (a truncated file fails here, not mid-training) -> (good files, sizes, modes)."""
    from PIL import Image

    sizes, modes, good, bad = [], [], [], []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                sizes.append(im.size)
                modes.append(im.mode)
            good.append(path)
        except DECODE_ERRORS as e:
            if not skip_bad_images:
                raise VQGenError(f"{path}: cannot decode image ({e}); pass --skip-bad-images to skip such files") from e
            bad.append(path)
    if bad:
        warn(f"{root}: skipped {len(bad)} unreadable image file(s) of {len(files)} (e.g. {bad[0]})")
    if not good:
        raise VQGenError(f"{root}: none of the {len(files)} image files could be decoded")
    return good, sizes, modes


def _folder_labels(root: Path, files: list[Path]) -> tuple[list[str] | None, list[int]]:
    """Class names and labels from first-level subfolders; (None, all -1) for a flat folder."""
    top_level = [p.relative_to(root).parts for p in files]
    in_subfolders = [len(parts) > 1 for parts in top_level]
    if any(in_subfolders) and not all(in_subfolders):
        loose = next(p for p, sub in zip(files, in_subfolders) if not sub)
        raise VQGenError(f"{loose}: images lie both in {root} and in its class subfolders; keep them in subfolders only")
    if not all(in_subfolders):
        return None, [-1] * len(files)
    label_names = sorted({parts[0] for parts in top_level})
    index = {name: i for i, name in enumerate(label_names)}
    return label_names, [index[parts[0]] for parts in top_level]


def square_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """--image-size N -> (N, N); an explicit (height, width) stays as it is."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return (int(size[0]), int(size[1]))
    return (size, size)


def _note_conversion(name: str, native: int, channels: int) -> None:
    if native != channels:
        warn(f"{name}: converting {native}-channel images to {channels} channel{'s' if channels > 1 else ''}")
