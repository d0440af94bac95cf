"""Residual vector quantization (SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022).

N = depth codebooks of K codes, each a ``VectorQuantizer`` with all its machinery (EMA, k-means
init, dead-code restarts, low-dim or cosine codes, the rotation trick): stage 1 quantizes the
encoder output z, stage d the residual r_d = z - (q_1 + ... + q_{d-1}), and the decoder gets
q_1 + ... + q_N. Each stage is straight-through (or rotated) on its own input, and the residuals
subtract the stages' detached outputs, so each stage trains its own projections and passes the
decoder's gradient to z; the loss is the sum of the stages' losses. k-means initialises stage d on
the residuals left by the already initialised stages 1..d-1 of the same first batch.

Shapes: indices (B, N, h, w), codes 0..K-1 in each codebook. In a code file ``<split>_codes`` is
(N_images, N, h, w). The prior models a stack as one map in raster order over (position, depth):
``flat_codes`` lays depth d of position (i, j) at column j*N + d of an (h, w*N) map (the PixelCNN
adds a learned embedding of the column's depth to each code's, ``PixelCNNConfig.code_depth``);
``stacked_codes`` undoes it for decoding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vqgen.models.quantizer import QuantizerOutput, VectorQuantizer


def flat_codes(codes: torch.Tensor) -> torch.Tensor:
    """Stacks (B, N, h, w) -> the prior's maps (B, h, w*N): depth d of position (i, j) at column j*N + d.

    Maps (B, h, w) come back unchanged.
    """
    if codes.dim() != 4:
        return codes
    b, n, h, w = codes.shape
    return codes.permute(0, 2, 3, 1).reshape(b, h, w * n)


def stacked_codes(maps: torch.Tensor, depth: int) -> torch.Tensor:
    """The prior's maps (B, h, w*N) -> stacks (B, N, h, w), the inverse of ``flat_codes``; depth 1: unchanged."""
    if depth == 1:
        return maps
    b, h, width = maps.shape
    return maps.view(b, h, width // depth, depth).permute(0, 3, 1, 2).contiguous()


def prior_map_shape(latent_shape: tuple[int, int], depth: int) -> tuple[int, int]:
    """The shape of the maps the prior models for stacks of ``depth`` codes: (h, w*N)."""
    h, w = latent_shape
    return h, w * depth


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, depth: int = 2, num_codes: int = 512, dim: int = 64, **options):
        """``options``: the ``VectorQuantizer`` flags, the same for every stage."""
        super().__init__()
        if depth < 1:
            raise ValueError(f"residual VQ needs a depth of at least 1, not {depth}")
        self.depth, self.num_codes, self.dim = depth, num_codes, dim
        self.stages = nn.ModuleList(VectorQuantizer(num_codes, dim, **options) for _ in range(depth))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        residual, quantized, outputs = z, 0.0, []
        for stage in self.stages:
            q = stage(residual)
            quantized = quantized + q.quantized
            residual = residual - q.quantized.detach()
            outputs.append(q)
        return QuantizerOutput(
            quantized=quantized,
            indices=torch.stack([q.indices for q in outputs], dim=1),
            loss=sum(q.loss for q in outputs),
            commitment=sum(q.commitment for q in outputs),
            codebook_loss=sum(q.codebook_loss for q in outputs),
        )

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, D, H, W) -> code stacks (B, N, H, W)."""
        residual, indices = z, []
        for stage in self.stages:
            indices.append(stage.encode(residual))
            residual = residual - stage.decode_indices(indices[-1]).to(residual.dtype)
        return torch.stack(indices, dim=1)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code stacks (B, N, H, W) -> the sum of the stages' vectors (B, D, H, W)."""
        return sum(stage.decode_indices(indices[:, d]) for d, stage in enumerate(self.stages))

    def set_restart_horizon(self, total_steps: int) -> None:
        for stage in self.stages:
            stage.set_restart_horizon(total_steps)

    def dead_codes(self) -> int:
        return sum(stage.dead_codes() for stage in self.stages)
