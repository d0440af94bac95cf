"""Autoregressive sampling of code maps from a gated PixelCNN.

``sample_full`` is the reference: one whole-map forward pass per position. Every sampler draws
its codes through ``draw_codes`` with the same random numbers in the same order, so samplers
that compute the same logits produce the same codes.
"""

from __future__ import annotations

import torch

from vqgen.models.pixelcnn import GatedPixelCNN


def draw_codes(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw one code per row of ``logits`` (B, K) with the Gumbel-max trick.

    The uniform noise is drawn on the CPU from ``generator`` whatever the device, so the same
    seed gives the same codes on CPU and GPU up to logit rounding.
    """
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7).to(logits.device)
    gumbel = -torch.log(-torch.log(uniform))
    return (logits + gumbel).argmax(dim=1)


@torch.no_grad()
def sample_full(
    model: GatedPixelCNN,
    n: int,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sample ``n`` code maps by recomputing the whole map for every position."""
    h, w = model.cfg.latent_shape
    codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
    labels = labels.to(device) if labels is not None else None
    for i in range(h):
        for j in range(w):
            logits = model(codes, labels)[:, :, i, j]
            codes[:, i, j] = draw_codes(logits, temperature, top_k, generator)
    return codes


SAMPLERS = {"full": sample_full}
