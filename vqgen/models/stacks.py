"""The gated PixelCNN over residual VQ stacks with a head per depth (the depth step of RQ-Transformer, Lee et al.
2022, on a PixelCNN trunk).

A stack of d codes a position comes as the (h, w*d) map of ``vqgen.models.rvq.flat_codes``, depth k of position
(i, j) at column j*d + k, and the logits go out in the same layout, so training, bits per code, evaluation and
both samplers treat it as any prior over that map. Inside, the gated layers run over the (h, w) positions, a
position's d codes embedded together (a table per depth, summed); head 1 reads the features at (i, j), which have
seen the stacks before (i, j), and head k those features plus the embeddings of the codes 1..k-1 already drawn at
(i, j). Against the side-by-side map (the default, ``GatedPixelCNN``) this divides the positions the layers run
over by d and lets fewer layers see a whole row (``PixelCNNConfig.depth_heads``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vqgen.config import PixelCNNConfig
from vqgen.models.pixelcnn import GatedPixelCNN, output_head
from vqgen.models.pixelcnn_cache import CachedPixelCNN, DenseHead


class StackPixelCNN(GatedPixelCNN):
    stacks = True

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__(cfg)
        c, d, k = self.cfg.channels, self.cfg.code_depth, self.cfg.num_codes
        self.drawn_embedding = nn.Embedding((d - 1) * k, c)  # depth k's code x, drawn before heads k+1.., at k * K + x
        self.depth_heads = nn.ModuleList(output_head(c, self.cfg.head_channels, k) for _ in range(d - 1))
        self.register_buffer("offsets", torch.arange(d) * k, persistent=False)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return (self.cfg.code_depth,)

    def embed(self, stacks: torch.Tensor, column: int | None = None) -> torch.Tensor:
        """Embeddings (..., C) of stacks (..., d): the sum of each depth's code embedding."""
        return self.embedding(stacks + self.offsets).sum(dim=-2)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """Maps (B, h, w*d) -> logits (B, K, h, w*d), each code's from the codes before it in raster order."""
        b, h, wd = codes.shape
        d, k = self.cfg.code_depth, self.cfg.num_codes
        stacks = codes.reshape(b, h, wd // d, d)
        features = self.features(self.embed(stacks), labels, cond)
        logits = [self.head(features)]
        for depth, head in enumerate(self.depth_heads):
            features = features + self.drawn_embedding(stacks[..., depth] + depth * k).permute(0, 3, 1, 2)
            logits.append(head(features))
        return torch.stack(logits, dim=-1).flatten(-2)

    def cache(self, n: int, labels: torch.Tensor | None = None, **given: torch.Tensor) -> CachedStackPixelCNN:
        return CachedStackPixelCNN(self, n, labels, **given)


class CachedStackPixelCNN:
    """Incremental raster-order evaluation of a StackPixelCNN over its (h, w*d) maps: the gated layers' cache
    (``CachedPixelCNN``) steps once a position, when its stack is complete; the heads once a code."""

    def __init__(self, model: StackPixelCNN, n: int, labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None):
        self.trunk = CachedPixelCNN(model, n, labels, cond)
        self.depth, self.num_codes = model.cfg.code_depth, model.cfg.num_codes
        self.heads = [self.trunk.head, *(DenseHead(head) for head in model.depth_heads)]
        self.drawn_embedding = model.drawn_embedding
        self.stack = self.trunk.row.new_zeros(n, self.depth)  # the codes drawn so far at the current position
        self.t = 0

    def prefill(self, codes: torch.Tensor) -> None:
        """Take the first ``t`` codes (B, t) of the maps, in raster order, as given."""
        for t in range(codes.shape[1]):
            self.step_logits()
            self.append(codes[:, t])

    def step_logits(self) -> torch.Tensor:
        """Logits (B, K) at the next raster position, given the codes before it."""
        depth = self.t % self.depth
        if depth == 0:
            self.features = self.trunk.step_features()
        return self.heads[depth](self.features)

    def append(self, codes: torch.Tensor) -> None:
        """Store the codes (B,) chosen at the next raster position; move on."""
        depth = self.t % self.depth
        self.stack[:, depth] = codes
        if depth + 1 < self.depth:
            self.features = self.features + self.drawn_embedding(codes + depth * self.num_codes)
        else:
            self.trunk.append(self.stack.clone())
        self.t += 1
