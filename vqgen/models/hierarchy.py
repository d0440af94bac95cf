"""The prior of a two-level VQ-VAE (VQ-VAE-2): p(top | class) and p(bottom | top, class), one file.

Two gated PixelCNNs of the same options: ``top`` over the top code map, ``bottom`` over the bottom
map with the top map as its conditioning map (``PixelCNNConfig.cond_codes``). The class label, label
dropout and guidance apply to both. They are trained together, as one model whose loss is the NLL
of both maps per code (their parameters are disjoint, so each gets its own level's gradient), and
sampled top first, then bottom given the top (``vqgen.sampling.sample_maps``).

A prior file holding both has ``levels: 2`` in its metadata, its ``config`` is
``{"levels": 2, "arch": "pixelcnn", "top": {...}, "bottom": {...}}`` and its tensors are ``top.*`` and ``bottom.*``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vqgen.config import TwoLevelPriorConfig
from vqgen.models.pixelcnn import GatedPixelCNN


class TwoLevelPrior(nn.Module):
    levels = 2

    def __init__(self, cfg: TwoLevelPriorConfig):
        super().__init__()
        cfg.validate()
        self.top = GatedPixelCNN(cfg.top)
        self.bottom = GatedPixelCNN(cfg.bottom)
        self.cfg = TwoLevelPriorConfig(self.top.cfg, self.bottom.cfg)  # each sized to its own map

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
