"""The samples folder that `vqgen sample` writes and `vqgen evaluate --samples` reads.

* ``NNNN.png``: one PNG per sample, numbered from 0 (as many digits as the count needs, at least 4);
* ``grid.png``: all samples in one picture (a row per class when sampled per class);
* ``codes.safetensors``: a vqgen file of kind ``samples``, tensors ``codes`` (N, h, w) int32 (residual
  VQ: (N, depth, h, w); two levels add ``codes_top``) and ``labels`` (N,) where conditional; JSON with
  ``prior_path``, ``prior_sha256``, ``vqvae_path``, ``num_codes``, ``code_depth``, ``levels``,
  ``latent_shape`` (``latent_shape_top``), ``label_names``, ``labels_requested``, the sampling settings
  (``temperature``, ``top_k``, ``guidance``, ``seed``, ``sampler``), ``image`` and ``dataset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqgen import __version__
from vqgen.errors import VQGenError
from vqgen.formats.files import make_output_folder, save_vqgen_file
from vqgen.data import read_image
from vqgen.formats.images import save_grid, save_png, viewer_scale

CODES_FILE = "codes.safetensors"


def save_samples(folder: Path, images: torch.Tensor, grid: tuple[torch.Tensor, int], maps: dict[str, torch.Tensor],
                 labels: list[int] | None, record: dict[str, Any]) -> dict[str, Any]:
    """Write the folder: the images (N, C, H, W), the grid (cells, columns), the code ``maps`` by tensor name and
    the labels; ``record`` is the JSON without ``kind`` and version. Returns the JSON written."""
    make_output_folder(folder)
    width = max(4, len(str(len(images) - 1)))
    for i, image in enumerate(images):
        save_png(image, folder / f"{i:0{width}d}.png")
    cells, columns = grid
    save_grid(cells, folder / "grid.png", nrow=columns, scale=viewer_scale(images.shape[-1], columns))
    record = {"kind": "samples", "vqgen_version": __version__, **record}
    tensors = {name: codes.to(torch.int32) for name, codes in maps.items()}
    if labels is not None:
        tensors["labels"] = torch.tensor(labels, dtype=torch.long)
    save_vqgen_file(folder / CODES_FILE, tensors, record)
    return record


def sample_png_files(folder: Path) -> list[tuple[int, Path]]:
    """The numbered PNGs `vqgen sample` writes (NNNN.png; grid.png and others are left out), in order."""
    files = [(int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit()]
    if not files:
        raise VQGenError(f"{folder}: no numbered sample images (NNNN.png) found")
    return sorted(files)


def sample_folder_shape(folder: Path) -> dict[str, Any]:
    """The ``image`` entry (size, channels) of a samples folder, read from its first PNG."""
    from PIL import Image

    _, first = sample_png_files(folder)[0]
    with Image.open(first) as im:
        return {"size": [im.height, im.width], "channels": 1 if im.mode in ("1", "L", "LA", "I", "I;16") else 3}


def load_sample_images(folder: Path, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
    """Every numbered sample of the folder (none left out) -> (N, C, H, W) in [0, 1] and their numbers."""
    files = sample_png_files(folder)
    images = [read_image(path, channels) for _, path in files]
    for (_, path), image in zip(files, images):
        if tuple(image.shape[1:]) != tuple(size):
            h, w = image.shape[1:]
            raise VQGenError(f"{path}: a {h}x{w} image, but the data is {size[0]}x{size[1]}")
    return torch.stack(images), [index for index, _ in files]
