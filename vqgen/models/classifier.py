"""The reference network for `vqgen evaluate`: a small CNN classifier trained on the dataset itself.

Offline there are no pretrained Inception weights, so sample quality is measured in the feature
space of this network: ``features`` is its penultimate layer (the input of the last linear map),
standardised per dimension with the mean and std over the training split (stored as buffers), so
that distances do not depend on the arbitrary scale of the activations; units that barely vary on
the training split are divided by a tenth of the median unit's std instead of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from vqgen.config import from_dict, to_dict


MIN_SCALE = 0.1  # the smallest feature scale, relative to the median unit's


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    num_classes: int = 10
    width: int = 16
    feature_dim: int = 128

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return from_dict(cls, d)


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class Classifier(nn.Module):
    """Five 3x3 conv layers (two of stride 2), global average pool, a hidden layer, a linear head."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.trunk = nn.Sequential(
            *conv_bn_relu(cfg.in_channels, w, 1),
            *conv_bn_relu(w, 2 * w, 2),
            *conv_bn_relu(2 * w, 2 * w, 1),
            *conv_bn_relu(2 * w, 4 * w, 2),
            *conv_bn_relu(4 * w, 4 * w, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(4 * w, cfg.feature_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_std", torch.ones(cfg.feature_dim))

    def raw_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> penultimate activations (B, feature_dim)."""
        return self.hidden(self.trunk(images * 2 - 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, standardised with the training split's statistics (``feature_scale``)."""
        return (self.raw_features(images) - self.feature_mean) / self.feature_scale()

    def feature_scale(self) -> torch.Tensor:
        """Each unit's divisor: its std over the training split, but at least ``MIN_SCALE`` of the median unit's.
        A ReLU unit that almost never fires on real images (std 0.0003 where the median is 0.8) would turn a rare
        activation into a feature in the hundreds and outweigh every other unit in FD, KID and precision/recall
        (docs/benchmarks.md#colour-photos)."""
        return self.feature_std.clamp_min(MIN_SCALE * self.feature_std.median())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> class logits (B, num_classes)."""
        return self.head(self.raw_features(images))

    @torch.no_grad()
    def set_feature_statistics(self, raw: torch.Tensor) -> None:
        """Standardise with these (N, feature_dim) activations; units that never vary keep scale 1."""
        std = raw.std(0)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
