"""PatchGAN discriminator (Isola et al. 2017, as used by VQGAN) with spectral normalisation.

The network maps an image in model space [-1, 1] to a grid of logits, one per overlapping patch,
so it judges local texture and sharpness rather than the whole image.

Why spectral norm rather than batch norm (VQGAN's choice): batch statistics couple the real and
the fake half of a batch, behave differently per process under DDP (each rank sees its own small
batch unless one pays for SyncBatchNorm), and are noisy at the tiny batches small GPUs and CPUs
allow. Spectral norm (Miyato et al. 2018) bounds each layer's Lipschitz constant from the
weights alone, pairs well with the hinge loss, and gives the same logits for an image whatever
else is in the batch, so real and fake images can go through in one forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from vqgen.config import DiscriminatorConfig


def _conv(c_in: int, c_out: int, stride: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1))


class PatchDiscriminator(nn.Module):
    """conv(s2) -> [conv(s2) -> LReLU] x (layers-1) -> conv(s1) -> LReLU -> conv(s1) to one logit map."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        width = lambda i: cfg.channels * min(2**i, 8)  # noqa: E731
        blocks: list[nn.Module] = [_conv(cfg.in_channels, width(0), 2), nn.LeakyReLU(0.2)]
        for i in range(1, cfg.layers):
            blocks += [_conv(width(i - 1), width(i), 2), nn.LeakyReLU(0.2)]
        blocks += [_conv(width(cfg.layers - 1), width(cfg.layers), 1), nn.LeakyReLU(0.2)]
        blocks.append(_conv(width(cfg.layers), 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 1, h, w) patch logits (> 0: judged real)."""
        return self.net(x)
