"""Vector quantizer: nearest-code lookup, straight-through gradients, and codebook upkeep.

Options (constructor flags): EMA codebook updates with Laplace smoothing, k-means
initialisation, dead-code restarts, cosine (l2-normalised) codes and a low-dimensional
codebook with in/out projections. Distances and codebook updates always run in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen import distributed as dist


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, H, W) straight-through: forward value z_q, gradient to z_e
    indices: torch.Tensor  # (B, H, W) int64
    loss: torch.Tensor  # codebook term (loss-based VQ only) + beta * commitment
    commitment: torch.Tensor  # ||z_e - sg(z_q)||^2, unweighted
    codebook_loss: torch.Tensor  # ||sg(z_e) - z_q||^2 (zero in EMA mode: EMA moves the codes)


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, d) x (K, d) -> (N, K) squared Euclidean distances, as ||x||^2 - 2 x.e + ||e||^2."""
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)[None]


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code histogram: K for uniform use, 1 when one code takes everything."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's algorithm; empty clusters keep a random data point. Returns (k, d) centroids."""
    n = x.shape[0]
    pick = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
    centroids = x[pick.to(x.device)].clone()
    for _ in range(iters):
        assign = squared_distances(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        restart_dead: bool = True,
        dead_threshold: float = 1.0,
        restart_every: int = 50,
        cosine: bool = False,
        codebook_dim: int | None = None,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_dead, self.dead_threshold, self.restart_every = restart_dead, dead_threshold, restart_every
        self.cosine = cosine
        self.code_dim = codebook_dim or dim
        low_dim = self.code_dim != dim
        self.project_in = nn.Linear(dim, self.code_dim) if low_dim else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, dim) if low_dim else nn.Identity()

        codebook = torch.randn(num_codes, self.code_dim) / self.code_dim**0.5
        self.codebook = nn.Parameter(codebook, requires_grad=not ema)
        # EMA statistics (kept in loss-based mode too: they drive usage tracking and restarts)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("usage", torch.ones(num_codes))  # EMA of assignments per batch
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps", torch.tensor(0))

    # -------------------------------------------------------------------------- lookup

    def normalized_codebook(self) -> torch.Tensor:
        codebook = self.codebook.float()
        return F.normalize(codebook, dim=1) if self.cosine else codebook

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B*H*W, code_dim) float32, projected and normalised as configured."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        flat = self.project_in(flat)
        return F.normalize(flat, dim=1) if self.cosine else flat

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return squared_distances(flat.detach(), self.normalized_codebook().detach()).argmin(1)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, D, H, W) -> code indices (B, H, W)."""
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)
            return self.nearest(flat).view(z.shape[0], *z.shape[2:])

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H, W) -> quantized vectors (B, D, H, W)."""
        vectors = self.project_out(self.normalized_codebook()[indices])
        return vectors.permute(0, 3, 1, 2).contiguous()

    # -------------------------------------------------------------------------- forward

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)
            if self.training:
                self._init_from_data(flat.detach())  # once: a no-op after the first batch
            indices = self.nearest(flat)
            codes = self.normalized_codebook()[indices]
            commitment = F.mse_loss(flat, codes.detach())
            if self.ema:
                codebook_loss = torch.zeros((), device=z.device)
            else:
                codebook_loss = F.mse_loss(codes, flat.detach())
            if self.training:
                self._update(flat.detach(), indices)
            # straight-through: forward pass uses the code, backward pass sees identity
            quantized = flat + (codes - flat).detach()
            quantized = self.project_out(quantized)
            b, _, h, w = z.shape
            quantized = quantized.view(b, h, w, self.dim).permute(0, 3, 1, 2).contiguous()
        return QuantizerOutput(
            quantized=quantized.to(z.dtype),
            indices=indices.view(b, h, w),
            loss=codebook_loss + self.beta * commitment,
            commitment=commitment,
            codebook_loss=codebook_loss,
        )

    # -------------------------------------------------------------------------- upkeep
    # (runs eagerly under torch.compile: it holds collectives and data-dependent branches)

    @torch.compiler.disable
    @torch.no_grad()
    def _init_from_data(self, flat: torch.Tensor) -> None:
        """k-means on the first batch (gathered from every rank; rank 0 computes, all receive)."""
        if bool(self.initialized):
            return
        data = dist.gather_rows(flat)
        centroids = kmeans(data, self.num_codes, self.kmeans_iters) if dist.is_main() else torch.empty_like(
            self.codebook
        )
        centroids = dist.broadcast(centroids.to(flat.device))
        self._set_codes(torch.arange(self.num_codes, device=flat.device), centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        if self.cosine:
            vectors = F.normalize(vectors, dim=1)
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        self.cluster_size[which] = 1.0
        self.embed_sum[which] = vectors.float()
        self.usage[which] = 1.0

    @torch.compiler.disable
    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook step (Sonnet-style, Laplace-smoothed) and dead-code restarts."""
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device).index_add_(0, indices, flat)
        counts, sums = dist.all_reduce_sum(counts), dist.all_reduce_sum(sums)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
            self.codebook.data.copy_(self.embed_sum / smoothed[:, None])
            if self.cosine:
                self.codebook.data.copy_(F.normalize(self.codebook.data, dim=1))
        self.steps += 1
        if self.restart_dead and int(self.steps) % self.restart_every == 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Re-seed codes whose usage EMA fell below the threshold with random recent encoder outputs."""
        dead = torch.nonzero(self.usage < self.dead_threshold).flatten()
        if dead.numel() == 0:
            return 0
        data = dist.gather_rows(flat)
        if dist.is_main():
            pick = torch.randint(data.shape[0], (dead.numel(),), device=data.device)
            vectors = data[pick]
        else:
            vectors = torch.empty(dead.numel(), self.code_dim, device=flat.device)
        vectors = dist.broadcast(vectors.to(flat.device))
        self._set_codes(dead, vectors)
        return int(dead.numel())

    def dead_codes(self) -> int:
        return int((self.usage < self.dead_threshold).sum())
