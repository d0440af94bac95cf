"""Training-set augmentation: random whole-pixel shifts and mirror images, drawn per epoch with the shuffle.

A VQ-VAE trained long on a few thousand images learns them by heart: on mnist5k the training
PSNR ends several dB above the validation PSNR. Shifting each training image by a few pixels in
a random direction shows the model new positions of the same strokes. The shifts are whole
pixels, so every pixel value is kept exactly (sub-pixel shifts, rotations and rescaling
resample and blur the image, and the model then learns blurrier images than the real ones).
The border that the shift uncovers repeats the edge row or column (black stays black on MNIST).

Photos also get mirror images (left-right flips): a mirrored cat is still a cat, and it doubles the
views of each object. Digits and text do not (a mirrored 2 is not a 2), which is why the flip is an
option whose default follows the images (``vqgen.config.is_photo``): on for colour images, off for grey ones.

The shift and the flip of each image are functions of (seed, epoch, index) alone (``draw_shifts``,
``draw_flips``); the batches of ``vqgen.data.batches`` apply them to a whole batch at once, so
resuming, the batch size and the number of torchrun processes do not change what any image looks like.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqgen import seeds


def draw_flips(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """(num_items,) bool: which training images ``epoch`` shows mirrored (each with probability 1/2)."""
    return torch.rand(num_items, generator=seeds.stream_generator(seed, seeds.FLIP, epoch)) < 0.5


def flip_images(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of (B, C, H, W) whose entry of the (B,) bool ``flips`` is set."""
    return torch.where(flips.to(images.device)[:, None, None, None], images.flip(-1), images)


def draw_shifts(num_items: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor:
    """(num_items, 2) int64 training shifts (dy, dx) of ``epoch``, each uniform in [-max_shift, max_shift]."""
    return _uniform_shifts(num_items, max_shift, seeds.stream_generator(seed, seeds.SHIFT, epoch))


def draw_copy_shifts(num_items: int, max_shift: int, seed: int, copy: int) -> torch.Tensor:
    """The shifts of extract-codes' copy number ``copy``: a stream of their own, so that the copies never
    repeat the shifts a VQ-VAE trained with the same seed saw."""
    return _uniform_shifts(num_items, max_shift, seeds.stream_generator(seed, seeds.COPY_SHIFT, copy))


def _uniform_shifts(num_items: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
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
