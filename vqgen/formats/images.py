"""Writing images: PNG files and grids, always through a temporary name."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from vqgen.formats.files import atomic_write


def to_pil(image: torch.Tensor):
    """(C, H, W) float in [0, 1] -> PIL image (grey for one channel)."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if array.shape[0] == 1:
        return Image.fromarray(array[0].numpy(), mode="L")
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def save_png(image: torch.Tensor, path: str | Path) -> None:
    pil = to_pil(image)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2, scale: int = 1) -> None:
    """Save (N, C, H, W) images in [0, 1] as one grid PNG with ``nrow`` images per row, each enlarged ``scale``
    times (nearest neighbour: every pixel a ``scale`` x ``scale`` block)."""
    images = images.detach().float().cpu()
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=0.5)
    if images.shape[1] == 1:
        grid = grid[:1]
    save_png(grid, path)


def viewer_scale(size: int, columns: int, padding: int = 2, min_width: int = 400, max_scale: int = 8) -> int:
    """How many times to enlarge images of side ``size`` in a grid of ``columns`` so that it reads in an image
    viewer: at least 2x below 64 px, and enough for a grid ``min_width`` pixels wide, up to ``max_scale``."""
    scale = 1 if size >= 64 else 2
    while scale < max_scale and columns * (scale * size + padding) + padding < min_width:
        scale += 1
    return scale


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a0, b0, a1, b1, ...]: originals beside their reconstructions."""
    return torch.stack([a, b], dim=1).flatten(0, 1)
