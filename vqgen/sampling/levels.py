"""Drawing from the prior of either kind of VQ-VAE: one code map, or VQ-VAE-2's top map, then its bottom map."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def sample_maps(draw: Callable[..., torch.Tensor], prior: torch.nn.Module, n: int,
                **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``n`` code maps drawn with ``draw`` (a sampler of ``SAMPLERS``) and its ``options``; from a two-level
    prior (top, bottom): the top maps first, then the bottom maps given them, from the same generator."""
    if getattr(prior, "levels", 1) == 2:
        top = draw(prior.top, n, **options)
        return top, draw(prior.bottom, n, cond=top, **options)
    return draw(prior, n, **options)
