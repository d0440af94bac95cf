"""Quality numbers: PSNR, codebook usage over a whole split, bits per code."""

from __future__ import annotations

import math

import torch

from vqgen import distributed as dist
from vqgen.models.quantizer import perplexity


def psnr_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image in [0, 1] (B, C, H, W) -> (B,); identical images are capped at 100 dB."""
    mse = (recon.float() - target.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)


class CodeHistogram:
    """Counts of every code over a split (summed across ranks by ``reduce``)."""

    def __init__(self, num_codes: int, device: torch.device | str = "cpu"):
        self.counts = torch.zeros(num_codes, dtype=torch.long, device=device)

    def add(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(indices.flatten().to(self.counts.device), minlength=len(self.counts))

    def reduce(self) -> None:
        self.counts = dist.all_reduce_sum(self.counts)

    def summary(self) -> dict[str, float]:
        k = len(self.counts)
        used = int((self.counts > 0).sum())
        total = max(int(self.counts.sum()), 1)
        top10 = int(self.counts.topk(min(10, k)).values.sum())
        return {
            "perplexity": perplexity(self.counts),
            "codes_used": used,
            "num_codes": k,
            "usage": used / k,
            "dead_codes": k - used,
            "top10_share": top10 / total,
        }
