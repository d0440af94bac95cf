"""The reference sampler: one whole-map forward pass of the prior per position, O(H*W) passes."""

from __future__ import annotations

import torch

from vqgen.sampling.draw import Guidance, draw_codes, exact_float32, raster_temperatures


@exact_float32()
@torch.no_grad()
def sample_full(model: torch.nn.Module, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
                top_k: int | None = None, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                guidance: float = 1.0, cond: torch.Tensor | None = None,
                residual_temperature: float | None = None) -> torch.Tensor:
    """Sample ``n`` code maps by recomputing the whole map for every position.

    ``model(codes (B, H, W), labels) -> logits (B, K, H, W)`` with logits[..., i, j] causal.
    ``guidance`` S != 1: classifier-free guidance, both halves in one batched pass. ``cond``: the
    conditioning map of each sample (the top codes, for the bottom prior of two levels). ``residual_temperature``:
    that of the finer codes of residual VQ stacks (``raster_temperatures``).
    """
    h, w = model.cfg.latent_shape
    temperatures = raster_temperatures(model.cfg, temperature, residual_temperature)
    codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
    guide = Guidance.for_model(model, labels, guidance, device)
    given = guide.conditioning(cond, device)
    for i in range(h):
        for j in range(w):
            logits = guide.combine(model(guide.rows(codes), guide.labels, **given)[:, :, i, j])
            codes[:, i, j] = draw_codes(logits, temperatures[i * w + j], top_k, generator)
    return codes
