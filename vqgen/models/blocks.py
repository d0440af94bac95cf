"""The pieces of the VQ-VAE's encoders and decoders: residual and self-attention blocks, optional
GroupNorm, and the layer lists of the two network layouts.

* the light layout (no ``--channel-mult``; the VQ-VAE paper's): stride-2 4x4 convs down to the
  latent resolution, residual blocks only there, and mirrored transposed convs back up;
* the scaled layout (``--channel-mult 1,2,2``): ``hidden x multiplier`` channels at each resolution
  and residual blocks at every one of them, in the manner of VQGAN's networks for larger images.

``--norm group`` puts a GroupNorm before every activation of the residual and attention blocks and
before the activation that ends each stack; ``--attention`` adds one self-attention block after the
residual blocks at the latent resolution. With neither, no module is added anywhere: the networks
(and their parameters, in the same order) are those of the plain VQ-VAE.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.config import VQVAEConfig

MAX_GROUPS = 32


def norm_layer(kind: str, channels: int) -> nn.Module:
    """GroupNorm with 32 groups (fewer where they do not divide the channels), or nothing."""
    return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels) if kind == "group" else nn.Identity()


def activation(kind: str, channels: int) -> list[nn.Module]:
    """[ReLU], with a GroupNorm before it when ``kind`` is group."""
    return ([norm_layer(kind, channels)] if kind == "group" else []) + [nn.ReLU()]


class ResidualBlock(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))) as in the VQ-VAE paper (GroupNorm before each ReLU with --norm group)."""

    def __init__(self, channels: int, res_channels: int, norm: str = "none"):
        super().__init__()
        self.conv3 = nn.Conv2d(channels, res_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(res_channels, channels, 1)
        self.norm1, self.norm2 = norm_layer(norm, channels), norm_layer(norm, res_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.norm2(self.conv3(F.relu(self.norm1(x))))))


class SelfAttention(nn.Module):
    """One-head self-attention over every position of a feature map, added to its input."""

    def __init__(self, channels: int, norm: str = "none"):
        super().__init__()
        self.norm = norm_layer(norm, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C) each
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(attended.transpose(1, 2).reshape(b, c, h, w))


def res_blocks(cfg: VQVAEConfig, channels: int, res_channels: int) -> list[nn.Module]:
    return [ResidualBlock(channels, res_channels, cfg.norm) for _ in range(cfg.num_res_blocks)]


def latent_stack(cfg: VQVAEConfig, channels: int) -> list[nn.Module]:
    """The residual blocks at the latent resolution, then the optional self-attention block."""
    res_channels = cfg.res_channels * channels // cfg.hidden_channels
    attention = [SelfAttention(channels, cfg.norm)] if cfg.attention else []
    return res_blocks(cfg, channels, res_channels) + attention


def down_layers(cfg: VQVAEConfig, in_channels: int, channels: int, downsamples: int) -> list[nn.Module]:
    """Light layout: ``downsamples`` stride-2 4x4 convs (to channels/2, the last to ``channels``), a 3x3 conv and
    the latent stack, then the closing activation."""
    layers: list[nn.Module] = []
    for i in range(downsamples):
        out = channels if i == downsamples - 1 else channels // 2
        layers += [nn.Conv2d(in_channels, out, 4, stride=2, padding=1), nn.ReLU()]
        in_channels = out
    layers.append(nn.Conv2d(in_channels, channels, 3, padding=1))
    return layers + latent_stack(cfg, channels) + activation(cfg.norm, channels)


def up_layers(cfg: VQVAEConfig, in_channels: int, channels: int, upsamples: int, out_channels: int,
              head_channels: int = 0) -> list[nn.Module]:
    """Light layout: a 3x3 conv to ``channels``, the latent stack, the activation, then ``upsamples``
    transposed convs (to channels/2, the last to the head or ``out_channels``) and the optional head."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
    layers += latent_stack(cfg, channels) + activation(cfg.norm, channels)
    for i in range(upsamples):
        last = i == upsamples - 1
        out = (head_channels or out_channels) if last else channels // 2
        layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
        channels = out
    if head_channels:
        # a full-resolution 3x3 conv after the last upsampling draws the stroke edges, where most error sits
        layers += [nn.ReLU(), nn.Conv2d(head_channels, out_channels, 3, padding=1)]
    return layers


def scaled_down_layers(cfg: VQVAEConfig) -> list[nn.Module]:
    """Scaled layout, image to latent features: a 3x3 conv, then per resolution residual blocks and a stride-2
    4x4 conv to the next one's channels; at the latent resolution the latent stack and the activation."""
    channels = [cfg.hidden_channels * m for m in cfg.multipliers]
    layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, channels[0], 3, padding=1)]
    for here, below, m in zip(channels, channels[1:], cfg.multipliers):
        layers += res_blocks(cfg, here, cfg.res_channels * m)
        layers.append(nn.Conv2d(here, below, 4, stride=2, padding=1))
    return layers + latent_stack(cfg, channels[-1]) + activation(cfg.norm, channels[-1])


def scaled_up_layers(cfg: VQVAEConfig, in_channels: int) -> list[nn.Module]:
    """Scaled layout, latent to image: the mirror of ``scaled_down_layers``, ending in a 3x3 conv to the image."""
    channels = [cfg.hidden_channels * m for m in cfg.multipliers]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[-1], 3, padding=1)]
    layers += latent_stack(cfg, channels[-1])
    for here, above, m in zip(channels[::-1], channels[-2::-1], cfg.multipliers[-2::-1]):
        layers.append(nn.ConvTranspose2d(here, above, 4, stride=2, padding=1))
        layers += res_blocks(cfg, above, cfg.res_channels * m)
    return layers + activation(cfg.norm, channels[0]) + [nn.Conv2d(channels[0], cfg.in_channels, 3, padding=1)]
