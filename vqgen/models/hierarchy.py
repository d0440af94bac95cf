"""The prior of a two-level VQ-VAE (VQ-VAE-2): p(top | class) and p(bottom | top, class), one file.

Two gated PixelCNNs of the same options: ``top`` over the top code map, ``bottom`` over the bottom
map with the top map as its conditioning map (``PixelCNNConfig.cond_codes``). The class label, label
dropout and guidance apply to both. They are trained together, as one model whose loss is the NLL
of both maps per code (their parameters are disjoint, so each gets its own level's gradient), and
sampled top first, then bottom given the top (``vqgen.sampling.sample_maps``).

A prior file holding both has ``levels: 2`` in its metadata, its ``config`` is
``{"levels": 2, "top": {...}, "bottom": {...}}`` and its tensors are ``top.*`` and ``bottom.*``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from vqgen.config import PixelCNNConfig
from vqgen.models.pixelcnn import GatedPixelCNN


@dataclass
class TwoLevelPriorConfig:
    top: PixelCNNConfig
    bottom: PixelCNNConfig

    @classmethod
    def for_maps(cls, cfg: PixelCNNConfig, top_shape: tuple[int, int]) -> TwoLevelPriorConfig:
        """Both priors with the options of ``cfg`` (sized to the bottom map), the top one at ``top_shape``."""
        top = dataclasses.replace(cfg, latent_shape=tuple(top_shape))
        bottom = dataclasses.replace(cfg, cond_codes=cfg.num_codes, cond_shape=tuple(top_shape))
        return cls(top, bottom)

    # what the samplers, the sample stage and evaluate read of a prior's config: the bottom map's
    @property
    def num_codes(self) -> int:
        return self.bottom.num_codes

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.bottom.latent_shape

    @property
    def num_classes(self) -> int:
        return self.bottom.num_classes

    def validate(self) -> None:
        self.top.validate()
        self.bottom.validate()

    def to_dict(self) -> dict[str, Any]:
        return {"levels": 2, "top": self.top.to_dict(), "bottom": self.bottom.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoLevelPriorConfig:
        return cls(PixelCNNConfig.from_dict(d["top"]), PixelCNNConfig.from_dict(d["bottom"]))


class TwoLevelPrior(nn.Module):
    levels = 2

    def __init__(self, cfg: TwoLevelPriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.top = GatedPixelCNN(cfg.top)
        self.bottom = GatedPixelCNN(cfg.bottom)

    @property
    def conditional(self) -> bool:
        return self.top.conditional

    @property
    def null_label(self) -> int | None:
        return self.top.null_label

    def forward(self, top: torch.Tensor, bottom: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(top maps (B, ht, wt), bottom maps (B, hb, wb)) -> (their logits (B, K, ht, wt), (B, K, hb, wb))."""
        return self.top(top, labels), self.bottom(bottom, labels, cond=top)


def build_prior(config: dict[str, Any]) -> nn.Module:
    """The prior a file's recorded ``config`` describes: a GatedPixelCNN, or a TwoLevelPrior."""
    if config.get("levels") == 2:
        return TwoLevelPrior(TwoLevelPriorConfig.from_dict(config))
    return GatedPixelCNN(PixelCNNConfig.from_dict(config))
