"""Training-set augmentation: random whole-pixel shifts, drawn per epoch together with the shuffle.

A VQ-VAE trained long on a few thousand images learns them by heart: on mnist5k the training
PSNR ends several dB above the validation PSNR. Shifting each training image by a few pixels in
a random direction shows the model new positions of the same strokes. The shifts are whole
pixels, so every pixel value is kept exactly (sub-pixel shifts, rotations and rescaling
resample and blur the image, and the model then learns blurrier images than the real ones).
The border that the shift uncovers repeats the edge row or column (black stays black on MNIST).

The shift of each image is a function of (seed, epoch, index) alone: resuming, the batch size
and the number of torchrun processes do not change what any image looks like.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from vqgen.distributed import ShardedBatchSampler

SHIFT_SEED_OFFSET = 1_000_003  # keeps the shift draws apart from the shuffle's (seed + epoch) stream


def draw_shifts(num_items: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor:
    """(num_items, 2) int64 shifts (dy, dx), each uniform in [-max_shift, max_shift]."""
    generator = torch.Generator().manual_seed(seed + epoch + SHIFT_SEED_OFFSET)
    return torch.randint(-max_shift, max_shift + 1, (num_items, 2), generator=generator)


def shift_images(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move each image of (B, C, H, W) by its whole-pixel shift (dy, dx) of (B, 2); edges are repeated.

    A positive dy moves the content down, a positive dx moves it right.
    """
    b, c, h, w = images.shape
    pad = int(shifts.abs().max()) if shifts.numel() else 0
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    rows = (torch.arange(h)[None] + pad - shifts[:, :1]).to(images.device)  # (B, H)
    cols = (torch.arange(w)[None] + pad - shifts[:, 1:]).to(images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class ShiftedImages(Dataset):
    """Reads keys ``(index, dy, dx)`` (from ``ShiftedBatches``): item ``index`` of ``dataset``, shifted."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int, int]]) -> list[tuple[torch.Tensor, Any]]:
        indices = [k[0] for k in keys]
        shifts = torch.tensor([[k[1], k[2]] for k in keys], dtype=torch.long)
        items = [self.dataset[i] for i in indices]
        shifted = shift_images(torch.stack([image for image, _ in items]), shifts)
        return [(image, label) for image, (_, label) in zip(shifted, items)]


class ShiftedBatches(Sampler[list[tuple[int, int, int]]]):
    """A batch sampler that tags every index of ``batches`` with its shift for the current epoch.

    The dataset size, the seed and the epoch (0 until ``set_epoch``) are those of ``batches``.
    """

    def __init__(self, batches: ShardedBatchSampler, max_shift: int):
        self.batches, self.max_shift = batches, max_shift

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        b = self.batches
        shifts = draw_shifts(b.num_items, self.max_shift, b.seed, b.epoch or 0).tolist()
        for batch in self.batches:
            yield [(i, *shifts[i]) for i in batch]
