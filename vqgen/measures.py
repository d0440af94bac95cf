"""The numbers every stage reports and evaluate reports again: PSNR, codebook use over a whole split (with
the reconstruction numbers of a VQ-VAE over a split, the one place they are computed), and bits per code
with the histogram-only baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import TensorDataset

from vqgen import distributed as dist
from vqgen.models.quantizer import perplexity


def psnr_per_image(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image in [0, 1] (B, C, H, W) -> (B,); identical images are capped at 100 dB."""
    mse = (recon.float() - target.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)


def histogram_bits_per_code(train_codes: torch.Tensor, val_codes: torch.Tensor, num_codes: int) -> float:
    """Bits per code of the histogram-only model: the cross-entropy of ``val_codes`` under the
    histogram of ``train_codes`` with add-one (Laplace) smoothing, p_j = (n_j + 1) / (N + K).

    A prior that learned nothing about positions, neighbours or classes costs this much; the
    smoothing keeps codes unseen in training finite (log2(N + K) bits each).
    """
    counts = torch.bincount(train_codes.flatten().long(), minlength=num_codes).double()
    log2_p = ((counts + 1) / (counts.sum() + num_codes)).log2()
    val = val_codes.flatten().long()
    if val.numel() == 0:
        raise ValueError("no validation codes to evaluate the histogram on")
    return float(-log2_p[val].mean())


class CodeHistogram:
    """Counts of every code over a split (summed across ranks by ``reduce``).

    Residual VQ: ``num_codes`` counts all codebooks (depth x K), and ``add`` takes stacks (B, depth, h, w).
    """

    def __init__(self, num_codes: int, device: torch.device | str = "cpu"):
        self.counts = torch.zeros(num_codes, dtype=torch.long, device=device)

    def add(self, indices: torch.Tensor) -> None:
        if indices.dim() == 4:  # stacks (B, depth, h, w): codebook d's code c is code d*K + c of all codebooks
            depth = indices.shape[1]
            indices = indices + len(self.counts) // depth * torch.arange(depth, device=indices.device).view(1, -1, 1, 1)
        self.counts += torch.bincount(indices.flatten().to(self.counts.device), minlength=len(self.counts))

    def reduce(self) -> None:
        self.counts = dist.all_reduce_sum(self.counts)

    def summary(self) -> dict[str, float]:
        return usage_summary(self.counts)


def usage_summary(counts: torch.Tensor) -> dict[str, float]:
    """Perplexity, codes used, usage, dead codes and the top-10 share of code counts (K,)."""
    k = len(counts)
    used = int((counts > 0).sum())
    total = max(int(counts.sum()), 1)
    top10 = int(counts.topk(min(10, k)).values.sum())
    return {
        "perplexity": perplexity(counts),
        "codes_used": used,
        "num_codes": k,
        "usage": used / k,
        "dead_codes": k - used,
        "top10_share": top10 / total,
    }


def histogram_bits(train: TensorDataset, val: TensorDataset, num_codes: int) -> tuple[float, dict[str, float]]:
    """Bits per ``val`` code of the histogram-only model of the ``train`` codes (datasets of code files):
    (over every code, {}); with two levels one histogram per level, (averaged over every code of both
    maps, {"top": ..., "bottom": ...})."""
    if len(train.tensors) == 2:
        return histogram_bits_per_code(train.tensors[0], val.tensors[0], num_codes), {}
    levels = {name: (histogram_bits_per_code(train.tensors[i], val.tensors[i], num_codes), val.tensors[i].numel())
              for name, i in (("top", 2), ("bottom", 0))}
    overall = sum(bits * n for bits, n in levels.values()) / max(1, sum(n for _, n in levels.values()))
    return overall, {name: bits for name, (bits, _) in levels.items()}


@torch.no_grad()
def reconstruction_numbers(model: torch.nn.Module, batches: Iterable, device: torch.device,
                           each: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> dict[str, float]:
    """MSE and PSNR (images in [0, 1]) and codebook use of a VQ-VAE over a whole split (summed across ranks);
    the top level's codebook as ``top_<key>`` with two levels. ``each(images, reconstructions)`` sees every
    batch (evaluate measures more on them)."""
    model.eval()
    histogram = CodeHistogram(model.cfg.total_codes, device)
    top_histogram = CodeHistogram(model.cfg.num_codes, device)
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # squared error, PSNR, images
    pixels = 0
    for images, _ in batches:
        images = images.to(device)
        recon, q = model(images)
        recon = model.from_model(recon.float())
        sums += torch.stack([(recon - images).double().pow(2).sum(), psnr_per_image(recon, images).double().sum(),
                             torch.tensor(images.shape[0], device=device, dtype=torch.float64)])
        pixels = images[0].numel()
        histogram.add(q.indices)
        if model.levels == 2:
            top_histogram.add(q.top.indices)
        if each is not None:
            each(images, recon)
    sq_err, psnr_sum, count = dist.all_reduce_sum(sums).tolist()
    histogram.reduce()
    mse = sq_err / max(count * pixels, 1)
    top = {}
    if model.levels == 2:
        top_histogram.reduce()
        top = {f"top_{key}": value for key, value in top_histogram.summary().items()}
    return {
        "mse": mse,
        "psnr": psnr_sum / max(count, 1),
        "psnr_of_mean_mse": 10 * math.log10(1 / max(mse, 1e-12)),
        **histogram.summary(),
        **top,
    }
