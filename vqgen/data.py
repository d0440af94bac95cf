"""Datasets behind ``--data``: the shipped mnist5k, torchvision's MNIST/Fashion-MNIST/CIFAR-10, or a folder.

Every dataset yields ``(image, label)`` with ``image`` a float tensor (C, H, W) in [0, 1] and
``label`` an int (-1 when unlabelled). ``load_image_data`` returns both splits plus a JSON-able
``spec`` that later stages use to rebuild exactly the same data and split.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vqgen.errors import VQGenError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
BUILTIN_DATASETS = ("mnist5k", *TORCHVISION_DATASETS)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass
class ImageData:
    train: Dataset
    val: Dataset
    spec: dict[str, Any]
    label_names: list[str] | None
    channels: int
    image_size: tuple[int, int]  # (height, width)

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.label_names else 0


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
    """Open the dataset named by ``data`` and split it into train and validation sets.

    ``image_size``: one side (square images) or (height, width); None keeps the native size.
    A folder is searched recursively for files with image extensions; hidden files and folders
    (``.name``) are skipped, other files are ignored and counted in a note.
    """
    if channels not in (None, 1, 3):
        raise VQGenError(f"--channels must be 1 or 3, not {channels}")
    if image_size is not None and min(_square(image_size)) < 1:
        raise VQGenError(f"--image-size must be positive, not {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise VQGenError(f"--val-fraction must be between 0 and 1, not {val_fraction}")
    spec = {
        "data": data,
        "image_size": image_size,
        "channels": channels,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
    }
    if data == "mnist5k":
        return _mnist5k(spec)
    if data in TORCHVISION_DATASETS:
        return _torchvision(spec, Path(root))
    path = Path(data)
    if not path.exists():
        names = ", ".join(BUILTIN_DATASETS)
        raise VQGenError(f"{data}: no such folder (and not a built-in dataset: {names})")
    if not path.is_dir():
        raise VQGenError(f"{data}: not a folder of images")
    return _image_folder(spec, path, skip_bad_images)


def image_data_from_spec(spec: dict[str, Any], root: str | Path = "data") -> ImageData:
    """Rebuild the data (same images, same split) that a checkpoint was trained on."""
    keys = ("image_size", "channels", "split_seed", "val_fraction")
    return load_image_data(spec["data"], root=root, **{k: spec[k] for k in keys})


# ----------------------------------------------------------------------------- transforms


def fit_image(image: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Resize (shorter side) and centre-crop a (C, H, W) float image, then set its channel count."""
    if image.shape[0] != channels:
        image = image.mean(0, keepdim=True) if channels == 1 else image[:1].expand(3, -1, -1)
    h, w = image.shape[1:]
    th, tw = size
    if (h, w) == (th, tw):
        return image
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - th) // 2, (nw - tw) // 2
    return image[:, top : top + th, left : left + tw].clamp(0, 1)


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


class Subset(Dataset):
    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over 0..total-1 (so class-sorted data shows every class)."""
    return [i * total // count for i in range(count)]


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split keeping each label's share; returns sorted (train, val) index lists."""
    generator = torch.Generator().manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    train, val = [], []
    for label in sorted(by_label):
        members = by_label[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = round(len(members) * val_fraction)
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    if not val and len(train) > 1:
        val.append(train.pop(int(torch.randint(len(train), (1,), generator=generator))))
    if not train or not val:
        raise VQGenError(f"too few images ({len(labels)}) to make a train and a validation split")
    return sorted(train), sorted(val)


# ----------------------------------------------------------------------------- the datasets


def _mnist5k(spec: dict[str, Any]) -> ImageData:
    with resources.files("vqgen.assets").joinpath("mnist5k.npz").open("rb") as f:
        arrays = np.load(f)
        images, labels = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])
    size = _square(spec["image_size"]) or (28, 28)
    channels = spec["channels"] or 1
    _note_conversion("mnist5k", 1, channels)
    full = TensorImages(images, labels, size, channels)
    train_idx, val_idx = stratified_split(labels.tolist(), spec["val_fraction"], spec["split_seed"])
    return _finish(spec, full, train_idx, full, val_idx, [str(d) for d in range(10)], channels, size)


def _torchvision(spec: dict[str, Any], root: Path) -> ImageData:
    import torchvision

    name = spec["data"]
    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, OSError... when offline
        raise VQGenError(
            f"{name}: could not download into {root}/ ({type(e).__name__}: {e}); "
            "check the network, or use --data mnist5k (shipped) or a folder of images"
        ) from e
    splits = []
    for ds in (train, test):
        data = torch.as_tensor(np.asarray(ds.data))
        if data.dim() == 4:  # CIFAR: (N, H, W, C)
            data = data.permute(0, 3, 1, 2)
        splits.append((data, torch.as_tensor(np.asarray(ds.targets))))
    native_channels = 1 if splits[0][0].dim() == 3 else splits[0][0].shape[1]
    channels = spec["channels"] or native_channels
    _note_conversion(name, native_channels, channels)
    size = _square(spec["image_size"]) or tuple(splits[0][0].shape[-2:])
    train_set, val_set = (TensorImages(d, l, size, channels) for d, l in splits)
    spec = {**spec, "split": "official train/test"}
    return _finish(
        spec, train_set, None, val_set, None, list(train.classes), channels, size  # type: ignore[arg-type]
    )


class ImageFolder(Dataset):
    """Image files decoded on access; labels from first-level subfolders (or -1)."""

    def __init__(self, files: list[Path], labels: list[int], size: tuple[int, int], channels: int):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.files[i], self.channels)
        return fit_image(image, self.size, self.channels), self.labels[i]


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Decode one image file into a (channels, H, W) float tensor in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            array = np.asarray(im, dtype=np.uint8).copy()
    except DECODE_ERRORS as e:
        raise VQGenError(f"{path}: cannot decode image ({e})") from e
    tensor = torch.from_numpy(array).float() / 255.0
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


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


def _image_folder(spec: dict[str, Any], root: Path, skip_bad_images: bool) -> ImageData:
    from PIL import Image

    from vqgen.logs import say, warn

    files, others = list_image_files(root)
    if not files:
        found = f" (only {len(others)} other files, e.g. {others[0].name})" if others else ""
        raise VQGenError(
            f"{root}: no images found{found}; looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively"
        )
    if others:
        say(f"note: {root}: ignored {len(others)} file(s) without an image extension (e.g. {others[0].name})")
    sizes, modes, good, bad = [], [], [], []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()  # decodes fully, so a truncated file fails here and not mid-training
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
    files = good
    top_level = [p.relative_to(root).parts for p in files]
    in_subfolders = [len(parts) > 1 for parts in top_level]
    if any(in_subfolders) and not all(in_subfolders):
        loose = next(p for p, sub in zip(files, in_subfolders) if not sub)
        raise VQGenError(f"{loose}: images lie both in {root} and in its class subfolders; keep them in subfolders only")
    if all(in_subfolders):
        label_names = sorted({parts[0] for parts in top_level})
        index = {name: i for i, name in enumerate(label_names)}
        labels = [index[parts[0]] for parts in top_level]
    else:
        label_names, labels = None, [-1] * len(files)
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
        size = _square(spec["image_size"])
    native = 1 if all(m in GREY_MODES for m in modes) else 3
    channels = spec["channels"] or native
    _note_conversion(str(root), native, channels)
    dataset = ImageFolder(files, labels, size, channels)
    train_idx, val_idx = stratified_split(labels, spec["val_fraction"], spec["split_seed"])
    spec = {**spec, "data": str(root), "num_files": len(files)}
    return _finish(spec, dataset, train_idx, dataset, val_idx, label_names, channels, size)


def _finish(
    spec: dict[str, Any],
    train: Dataset,
    train_idx: list[int] | None,
    val: Dataset,
    val_idx: list[int] | None,
    label_names: list[str] | None,
    channels: int,
    size: tuple[int, int],
) -> ImageData:
    train = Subset(train, train_idx) if train_idx is not None else train
    val = Subset(val, val_idx) if val_idx is not None else val
    spec = {**spec, "resolved_image_size": list(size), "resolved_channels": channels}
    spec["num_train"], spec["num_val"] = len(train), len(val)
    return ImageData(train, val, spec, label_names, channels, size)


def _square(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """--image-size N -> (N, N); an explicit (height, width) stays as it is."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return (int(size[0]), int(size[1]))
    return (size, size)


def _note_conversion(name: str, native: int, channels: int) -> None:
    if native != channels:
        from vqgen.logs import warn

        warn(f"{name}: converting {native}-channel images to {channels} channel{'s' if channels > 1 else ''}")
