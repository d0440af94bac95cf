"""Shape and channel conversions shared by every data source, the tools and the Python API.

Images are float tensors (C, H, W) in [0, 1] with C = 1 or 3. Colour becomes grey by ITU-R 601
luma (0.299 R + 0.587 G + 0.114 B), the rule of torchvision's ``rgb_to_grayscale`` and of PIL's
"L" mode, whether the images come from a tensor dataset or from files.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """A 1- or 3-channel (C, H, W) image with ``channels`` channels (grey by luma, colour by repeating grey)."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return TF.rgb_to_grayscale(image, num_output_channels=1)
    return image[:1].expand(3, -1, -1)


def resize_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale (antialiased bilinear) until the image covers ``size`` (height, width), then centre-crop to it."""
    h, w = image.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return image
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    image = TF.resize(image, [nh, nw], antialias=True)
    return TF.center_crop(image, [th, tw]).clamp(0, 1)


def fit_image(image: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Set the channel count, then resize and centre-crop to ``size`` (height, width)."""
    return resize_crop(to_channels(image, channels), size)
