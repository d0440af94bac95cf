"""Vector quantizer: nearest-code lookup, straight-through gradients, and codebook upkeep.

Options (constructor flags): EMA codebook updates with Laplace smoothing, k-means
initialisation, dead-code restarts, cosine (l2-normalised) codes, a low-dimensional
codebook with in/out projections, and the rotation trick (``rotate_onto``) in place of the
straight-through copy of gradients. Distances and codebook updates always run in float32.

Memory stays bounded for large K, batches and process counts: nearest-code search works on
blocks of rows (at most DISTANCE_BLOCK distances, i.e. 64 MiB, at a time), k-means runs on at
most KMEANS_ROWS_PER_CODE * K encoder outputs picked from all ranks together, and a restart
moves only the rows it re-seeds codes with (at most K) between ranks.
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


DISTANCE_BLOCK = 1 << 24  # distances (float32) computed at once by nearest_codes: 64 MiB
KMEANS_ROWS_PER_CODE = 64  # k-means init sees at most this many encoder outputs per code (all ranks together)


def code_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, d) x (K, d) -> (N, K) ||e||^2 - 2 x.e: the squared distances less ||x||^2, which no row's nearest code
    depends on; one fused matrix product, where the full formula would make three passes over (N, K)."""
    return torch.addmm(codebook.pow(2).sum(1), x, codebook.t(), alpha=-2)


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, block_rows: int | None = None) -> torch.Tensor:
    """(N, d) x (K, d) -> (N,) index of the nearest code of each row.

    Distances are computed ``block_rows`` rows at a time (default: DISTANCE_BLOCK // K), so at
    most block_rows x K of them exist at once, whatever N is.
    """
    rows = block_rows or max(1, DISTANCE_BLOCK // codebook.shape[0])
    if x.shape[0] <= rows:
        return code_distances(x, codebook).argmin(1)
    return torch.cat([code_distances(part, codebook).argmin(1) for part in x.split(rows)])


def straight_through(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value q; the gradient reaches e unchanged (van den Oord et al. 2017)."""
    return e + (q - e).detach()


def rotate_onto(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024) for rows e, q (N, d): forward value exactly q, gradient
    to e that of sg(lambda R) e, R the rotation taking e's direction to q's and lambda = |q| / |e|.

    R = I - 2 r r^T + 2 q^ e^^T with e^ = e/|e|, q^ = q/|q|, r = (e^ + q^)/|e^ + q^| (two Householder
    reflections), applied without forming the d x d matrix. The value is q itself, not R e (equal only
    up to rounding): sg(q) + (R e - sg(R e)); like straight-through, no gradient reaches q.
    """
    e_hat = F.normalize(e.detach(), dim=1, eps=eps)
    q_norm = q.detach().norm(dim=1, keepdim=True)
    q_hat = q.detach() / q_norm.clamp_min(eps)
    r = F.normalize(e_hat + q_hat, dim=1, eps=eps)
    scale = q_norm / e.detach().norm(dim=1, keepdim=True).clamp_min(eps)
    rotated = e - 2 * (e * r).sum(1, keepdim=True) * r + 2 * (e * e_hat).sum(1, keepdim=True) * q_hat
    rotated = scale * rotated
    return q.detach() + (rotated - rotated.detach())


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code histogram: K for uniform use, 1 when one code takes everything."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def kmeans(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None, block_rows: int | None = None
) -> torch.Tensor:
    """Lloyd's algorithm; empty clusters keep a random data point. Returns (k, d) centroids.

    Memory: x, the centroids and their sums ((N + 2k) x d) plus one block of distances
    (``block_rows`` x k, at most DISTANCE_BLOCK by default); never the whole N x k matrix.
    """
    n = x.shape[0]
    pick = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
    centroids = x[pick.to(x.device)].clone()
    for _ in range(iters):
        assign = nearest_codes(x, centroids, block_rows)
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
        dead_threshold: float = 0.5,
        restart_every: int = 50,
        restart_stop: float = 0.8,
        cosine: bool = False,
        codebook_dim: int | None = None,
        rotation_trick: bool = False,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        # a code is dead when its usage EMA falls below dead_threshold x the mean usage (the expected
        # count per code and step, rows/K): the same meaning for any K, batch or latent size
        self.restart_dead, self.dead_threshold, self.restart_every = restart_dead, dead_threshold, restart_every
        self.restart_stop = restart_stop
        self.cosine, self.rotation_trick = cosine, rotation_trick
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
        # last step that may restart codes (set_restart_horizon); -1: no limit
        self.register_buffer("restart_until", torch.tensor(-1))
        self._host = None  # (initialized, steps, restart_until) as Python values: a step never reads the buffers

    def set_restart_horizon(self, total_steps: int) -> None:
        """Allow dead-code restarts only in the first ``restart_stop`` of a run of ``total_steps`` steps.

        The trainer calls this once at start (after restoring a resume file, so that a new --epochs
        moves the horizon too); without it restarts go on until the end. The decoder then trains
        its last steps on a codebook that no longer jumps.
        """
        self.restart_until.fill_(int(self.restart_stop * total_steps))
        self._host = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the restart horizon existed: restarts until the end
        state_dict.setdefault(prefix + "restart_until", torch.tensor(-1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._host = None

    def _host_state(self) -> dict:
        """The upkeep counters as Python values, read from the buffers once (after building or loading) and
        then kept beside them, so that training steps do not wait for the device to read them."""
        if self._host is None:
            self._host = {"initialized": bool(self.initialized), "steps": int(self.steps),
                          "restart_until": int(self.restart_until)}
        return self._host

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
            return nearest_codes(flat.detach(), self.normalized_codebook().detach())

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
            # forward pass uses the code; backward: identity (straight-through) or the rotation
            quantized = (rotate_onto if self.rotation_trick else straight_through)(flat, codes)
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
        """k-means on the first batch (gathered from every rank; rank 0 computes, all receive).

        At most KMEANS_ROWS_PER_CODE * K rows of the global batch take part: rank 0 draws which,
        and each rank sends only its picked rows, so N processes pick what one process would.
        """
        if self._host_state()["initialized"]:
            return
        total, cap = sum(dist.row_counts(flat)), KMEANS_ROWS_PER_CODE * self.num_codes
        if total <= cap:
            data = dist.gather_rows(flat)
        else:
            pick = torch.randperm(total)[:cap].sort().values if dist.is_main() else torch.empty(cap, dtype=torch.long)
            data = dist.gather_picked_rows(flat, dist.broadcast(pick.to(flat.device)))
        centroids = kmeans(data, self.num_codes, self.kmeans_iters) if dist.is_main() else torch.empty_like(
            self.codebook
        )
        centroids = dist.broadcast(centroids.to(flat.device))
        self._set_codes(torch.arange(self.num_codes, device=flat.device), centroids)
        self.initialized.fill_(True)
        self._host_state()["initialized"] = True

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        """Place codes ``which``; their usage starts at the mean, so a re-seeded code that stays
        unused is dead again after ~ln(1/dead_threshold)/(1-decay) steps (70 at the defaults)."""
        if self.cosine:
            vectors = F.normalize(vectors, dim=1)
        fresh = self.usage.mean()
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        self.cluster_size[which] = 1.0
        self.embed_sum[which] = vectors.float()
        self.usage[which] = fresh

    @torch.compiler.disable
    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook step (Sonnet-style, Laplace-smoothed) and dead-code restarts."""
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device).index_add_(0, indices, flat)
        counts, sums = dist.all_reduce_sum(counts), dist.all_reduce_sum(sums)
        host = self._host_state()
        if host["steps"] == 0:  # start every code at the mean count, so usage.mean() tracks rows/K from here on
            self.usage.fill_(float(counts.sum()) / self.num_codes)
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
        host["steps"] += 1
        step, until = host["steps"], host["restart_until"]
        if self.restart_dead and step % self.restart_every == 0 and (until < 0 or step <= until):
            self._restart_dead_codes(flat)

    def dead_mask(self) -> torch.Tensor:
        """(K,) bool: usage EMA below dead_threshold x the mean usage (the expected count per code)."""
        return self.usage < self.dead_threshold * self.usage.mean()

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Re-seed dead codes with random encoder outputs of this step's global batch.

        Rank 0 draws which rows; only those (at most one per dead code) travel between ranks.
        """
        dead = torch.nonzero(self.dead_mask()).flatten()
        if dead.numel() == 0:
            return 0
        total = sum(dist.row_counts(flat))
        if dist.is_main():
            pick = torch.randint(total, (dead.numel(),), device=flat.device)
        else:
            pick = torch.empty(dead.numel(), dtype=torch.long, device=flat.device)
        vectors = dist.gather_picked_rows(flat, dist.broadcast(pick))
        self._set_codes(dead, vectors)
        return int(dead.numel())

    def dead_codes(self) -> int:
        return int(self.dead_mask().sum())
