"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

The encoder output (B, D, h, w) is projected to C = len(levels) channels; channel i is bounded so
that rounding gives exactly ``levels[i]`` integer values, rounded with a straight-through
estimator, scaled into [-1, 1] and projected back to D. The implied codebook is the grid of every
combination of levels: K = prod(levels), and a code's index is the mixed-radix number of its
per-channel digits (channel 0 the lowest digit). There is no codebook to learn, hence no codebook
loss, no commitment, no k-means or restarts and no collapse; codes used and perplexity are still
measured from the indices.

One addition to the paper: nothing holds the scale of the encoder's output (VQ has its commitment
loss), and with Adam at --lr 4e-3 (batch 64, the default) or 2e-3 or 1e-3 (batch 16) the default
VQ-VAE drove its projections deep into the flat tails of tanh within 50-100 steps, where the
bound passes almost no gradient: every position kept one code for good (5e-4 and 2e-4 recovered
slowly). ``tail_weight`` x the mean of relu(|projection| - TAIL_EDGE)^2, zero wherever tanh still
has a gradient of 0.07 or more, keeps them out of the tails: with weight 0.01, [8,8,8] had 400
codes in use in a batch of 3136 positions after 250 steps at 4e-3 (250-300 of 784 at 2e-3, batch
16). It is the output's ``loss`` and ``commitment`` (unweighted); 0 gives the paper's FSQ.

Bounding channel i with L levels, a = (L - 1)(1 - eps) / 2: odd L, a tanh(z) lies within
(-(L-1)/2, (L-1)/2) and rounds to the L integers -(L-1)/2 .. (L-1)/2. Even L needs a half-step
offset: a tanh(z + s) - 1/2, with tanh(s) = 1/(2a) so that z = 0 stays 0, lies within (-L/2, L/2 - 1)
and rounds to -L/2 .. L/2 - 1 (L = 2 has no level 0 and takes s = 0: z = 0 is the boundary between its
two levels). The digit is the rounded value + L // 2, in 0 .. L-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from vqgen.models.quantizer import QuantizerOutput

BOUND_EPS = 1e-3  # keeps a tanh bound off the rounding boundary at +-(L-1)/2 + 1/2
TAIL_EDGE = 2.0  # tanh'(2) = 0.07; the largest of 8 levels is reached from 1.3 on


def bound(z: torch.Tensor, levels: torch.Tensor, eps: float = BOUND_EPS) -> torch.Tensor:
    """(..., C) -> (..., C) within the interval whose rounding gives levels[i] integers per channel."""
    half = (levels - 1) * (1 - eps) / 2
    offset = (levels % 2 == 0).to(z.dtype) * 0.5
    ratio = offset / half
    shift = torch.atanh(torch.where(ratio < 1, ratio, 0.0))  # L = 2: ratio > 1, no shift keeps 0 at 0
    return torch.tanh(z + shift) * half - offset


def tail_penalty(x: torch.Tensor, edge: float = TAIL_EDGE) -> torch.Tensor:
    """Mean of relu(|x| - edge)^2: zero inside [-edge, edge], growing in tanh's flat tails."""
    return torch.relu(x.abs() - edge).pow(2).mean()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer; the gradient passes unchanged (straight-through)."""
    return x + (x.round() - x).detach()


def mixed_radix_basis(levels: torch.Tensor) -> torch.Tensor:
    """(1, L0, L0 L1, ...): the place value of each channel's digit."""
    return torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)


def digits_to_index(digits: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Per-channel digits (..., C) in 0..L_i-1 -> code index (...) in 0..prod(levels)-1."""
    return (digits.long() * mixed_radix_basis(levels)).sum(-1)


def index_to_digits(index: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Code index (...) -> per-channel digits (..., C); the inverse of ``digits_to_index``."""
    return (index.long()[..., None] // mixed_radix_basis(levels)) % levels


class FiniteScalarQuantizer(nn.Module):
    def __init__(self, levels: Sequence[int], dim: int = 64, tail_weight: float = 0.01):
        super().__init__()
        if len(levels) < 1 or min(levels) < 2:
            raise ValueError(f"FSQ needs at least one channel of at least 2 levels, not {list(levels)}")
        self.dim, self.num_codes, self.tail_weight = dim, math.prod(levels), tail_weight
        # derived from the config, so not in the state dict
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.long), persistent=False)
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)

    @property
    def half_width(self) -> torch.Tensor:
        return self.levels // 2

    def _project(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> projections (B*H*W, C), float32."""
        return self.project_in(z.permute(0, 2, 3, 1).reshape(-1, self.dim).float())

    def _rounded(self, projected: torch.Tensor) -> torch.Tensor:
        """Projections -> rounded per-channel values, straight-through."""
        return round_ste(bound(projected, self.levels.float()))

    def _to_indices(self, rounded: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        digits = rounded.detach().round().long() + self.half_width
        return digits_to_index(digits, self.levels).view(z.shape[0], *z.shape[2:])

    def _to_output(self, rounded: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """Rounded values (N, C) -> scaled to [-1, 1] and projected back, (B, D, H, W)."""
        b, h, w = shape
        vectors = self.project_out(rounded / self.half_width.float())
        return vectors.view(b, h, w, self.dim).permute(0, 3, 1, 2).contiguous()

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, D, H, W) -> code indices (B, H, W)."""
        with torch.autocast(z.device.type, enabled=False):
            return self._to_indices(self._rounded(self._project(z)), z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H, W) -> quantized vectors (B, D, H, W)."""
        rounded = (index_to_digits(indices, self.levels) - self.half_width).float()
        return self._to_output(rounded.reshape(-1, len(self.levels)), tuple(indices.shape))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):
            projected = self._project(z)
            rounded = self._rounded(projected)
            quantized = self._to_output(rounded, (z.shape[0], *z.shape[2:]))
            tail = tail_penalty(projected)
        return QuantizerOutput(quantized=quantized.to(z.dtype), indices=self._to_indices(rounded, z),
                               loss=self.tail_weight * tail, commitment=tail,
                               codebook_loss=torch.zeros((), device=z.device))

    # nothing to keep alive: the trainer's calls are no-ops
    def set_restart_horizon(self, total_steps: int) -> None:
        pass

    def dead_codes(self) -> int:
        return 0
