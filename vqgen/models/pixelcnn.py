"""Gated PixelCNN prior over code maps (van den Oord et al. 2016), optionally class-conditional.

Causality is built from padding and shifts rather than masks:

* vertical stack: ``v_pre[i]`` = conv over ``v`` rows ``i-p .. i`` (kernel (p+1) x k, p = k // 2).
  Since layer 1's input is the code map itself, ``v`` at row i has seen rows <= i, so the
  vertical stack feeds the horizontal one *shifted down by one row* (rows < i only);
* horizontal stack: conv over columns ``j-p .. j`` of the current row (kernel 1 x (p+1)); in
  the first layer the result is shifted right by one (mask "A": excludes the current code);
  later layers may include the current position of the previous layer's features (mask "B");
* gates: tanh(a) * sigmoid(b), with a per-class bias added to both stacks when conditional;
  with label dropout (classifier-free guidance, see ``vqgen.models.prior``) one extra "no
  class" row of that bias;
* the bottom prior of a two-level VQ-VAE is also conditioned on the top code map: a conditioning
  stack (embedding, convs, upsampling to the code map's size) gives features that every layer maps
  to a per-position bias of both stacks, the spatial twin of the class bias. It depends on the top
  codes only, anywhere in the map, so causality over the modelled codes is untouched;
* the horizontal stack has a 1x1 residual connection from layer 2 on and a 1x1 skip output
  from every layer; the skips are summed and mapped to K logits;
* optionally (``attention_heads`` > 0) one causal self-attention block over raster positions between
  the skip sum and the head, as PixelSNAIL (Chen et al. 2018) adds to reach the whole map at once:
  the features at position t have seen the codes before t only, so they may attend to every
  position <= t, t itself included;
* residual VQ stacks (``code_depth`` N > 1) come as (h, w*N) maps, depth d of position (i, j) at
  column j*N + d (``vqgen.models.rvq.flat_codes``). This network models the map itself (with
  ``depth_heads``, ``vqgen.models.stacks.StackPixelCNN`` runs over the positions with a head per
  depth instead): each code's embedding gets a learned embedding of its column's depth added, so the prior
  knows from the code to its left (or the row's start) which codebook it predicts, always among that
  codebook's K codes.

The incremental step the cached sampler drives is ``vqgen.models.pixelcnn_cache``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.config import PixelCNNConfig
from vqgen.errors import VQGenError
from vqgen.models.attention import MultiHeadAttention
from vqgen.models.prior import CodePrior

if TYPE_CHECKING:
    from vqgen.models.pixelcnn_cache import CachedPixelCNN


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move every row down by one (row 0 becomes zeros)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Move every column right by one (column 0 becomes zeros)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def layout(weight: torch.Tensor) -> torch.memory_format:
    """channels_last if a conv weight is laid out so (the model was moved to it), else the default layout."""
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def output_head(channels: int, hidden: int, num_codes: int) -> nn.Sequential:
    """ReLU, 1x1 conv to ``hidden``, ReLU, 1x1 conv to K logits."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, num_codes, 1))


class GatedLayer(nn.Module):
    def __init__(self, channels: int, kernel_size: int, first: bool, last: bool, num_classes: int, dropout: float,
                 spatial: bool = False):
        """``num_classes`` counts the rows of the class bias (the "no class" row included); ``spatial``: a
        per-position bias from conditioning features too."""
        super().__init__()
        self.first = first
        self.pad = kernel_size // 2
        c = channels
        self.v_conv = nn.Conv2d(c, 2 * c, (self.pad + 1, kernel_size))
        self.h_conv = nn.Conv2d(c, 2 * c, (1, self.pad + 1))
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        # the last layer's horizontal output would feed nothing (the head reads the skips)
        self.h_out = None if last else nn.Conv2d(c, c, 1)
        self.skip = nn.Conv2d(c, c, 1)
        self.cond = nn.Embedding(num_classes, 4 * c) if num_classes else None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.spatial = nn.Conv2d(c, 4 * c, 1) if spatial else None

    def class_bias(
        self, labels: torch.Tensor | None, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The biases of the vertical and horizontal stacks: (B, 2C, 1, 1) per class, (B, 2C, H, W) with
        conditioning ``features``, 0.0 without either."""
        v_bias, h_bias = 0.0, 0.0
        if self.cond is not None and labels is not None:
            v_bias, h_bias = self.cond(labels)[:, :, None, None].chunk(2, dim=1)
        if self.spatial is not None and features is not None:
            v_map, h_map = self.spatial(features).chunk(2, dim=1)
            v_bias, h_bias = v_bias + v_map, h_bias + h_map
        return v_bias, h_bias

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v_bias, h_bias = self.class_bias(labels, features)
        p = self.pad
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0))) + v_bias
        h_pre = self.h_conv(F.pad(h, (p, 0, 0, 0)))
        if self.first:
            h_pre = shift_right(h_pre)
        h_pre = h_pre + self.v_to_h(shift_down(v_pre)) + h_bias
        h_gated = self.dropout(gate(h_pre))
        if self.h_out is None:
            return gate(v_pre), h, self.skip(h_gated)
        h_new = self.h_out(h_gated)
        if not self.first:
            h_new = h_new + h
        return gate(v_pre), h_new, self.skip(h_gated)


class ConditioningStack(nn.Module):
    """A conditioning code map (B, hc, wc) -> features (B, C, H, W) at the modelled map's size: an embedding,
    a 3x3 conv, nearest upsampling by H / hc, another 3x3 conv."""

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        c = cfg.channels
        self.scale = cfg.latent_shape[0] // cfg.cond_shape[0]
        self.embedding = nn.Embedding(cfg.cond_codes, c)
        self.before = nn.Conv2d(c, c, 3, padding=1)
        self.after = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.before(self.embedding(cond).permute(0, 3, 1, 2)))
        return F.relu(self.after(F.interpolate(x, scale_factor=self.scale, mode="nearest")))


class MapAttention(nn.Module):
    """x + attention(LayerNorm(x)) over the raster positions of (B, C, H, W) features, each position
    attending to itself and the ones before it. The output projection starts at zero, so a new block
    starts as the identity."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = MultiHeadAttention(channels, heads)
        nn.init.zeros_(self.attention.out.weight)
        nn.init.zeros_(self.attention.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = x.flatten(2).transpose(1, 2)
        return (seq + self.attention(self.norm(seq))).transpose(1, 2).reshape(b, c, h, w)

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, t: int) -> torch.Tensor:
        """Raster position t alone: its features (B, C) -> the block's output (B, C), with the keys and values
        of the positions before it (see ``MultiHeadAttention.step``)."""
        return x + self.attention.step(self.norm(x[:, None]), keys, values, t)[:, 0]


class GatedPixelCNN(CodePrior):
    stacks = False  # over residual VQ stacks with depth heads: vqgen.models.stacks.StackPixelCNN
    stack_shape: tuple[int, ...] = ()  # what the cache's rows hold at a position: one code

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        cfg = cfg.sized()
        cfg.validate()
        if cfg.stacked != self.stacks:
            raise VQGenError(f"{type(self).__name__} does not model residual VQ stacks with depth_heads="
                             f"{cfg.depth_heads}; build priors with vqgen.models.build_prior")
        self.cfg = cfg
        # stacks with depth heads embed depth d's code x at row d * K + x (``StackPixelCNN``)
        self.embedding = nn.Embedding(cfg.num_codes * (cfg.code_depth if cfg.stacked else 1), cfg.channels)
        side_by_side = cfg.code_depth > 1 and not cfg.stacked
        self.depth_embedding = nn.Embedding(cfg.code_depth, cfg.channels) if side_by_side else None
        spatial = cfg.cond_codes > 0
        self.layers = nn.ModuleList(
            GatedLayer(cfg.channels, cfg.kernel_size, i == 0, i == cfg.num_layers - 1, self.class_rows, cfg.dropout,
                       spatial)
            for i in range(cfg.num_layers)
        )
        self.head = output_head(cfg.channels, cfg.head_channels, cfg.num_codes)
        self.cond_stack = ConditioningStack(cfg) if spatial else None
        self.attention = MapAttention(cfg.channels, cfg.attention_heads) if cfg.attention_heads else None

    def embed(self, codes: torch.Tensor, column: int | None = None) -> torch.Tensor:
        """Code embeddings (..., C) of whole rows (..., W), or of one column's codes (B,) at ``column``."""
        x = self.embedding(codes)
        if self.depth_embedding is None:
            return x
        depth = self.cfg.code_depth
        if column is not None:
            return x + self.depth_embedding.weight[column % depth]
        columns = torch.arange(codes.shape[-1], device=codes.device) % depth
        return x + self.depth_embedding(columns)

    def condition(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning features of a conditioning map (B, hc, wc) (None for a prior without one)."""
        if self.cond_stack is None:
            if cond is not None:
                raise VQGenError("this prior is not conditioned on a code map, but one was given")
            return None
        if cond is None:
            raise VQGenError("this prior is conditioned on the top code map: it is required")
        return self.cond_stack(cond)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """Code maps (B, H, W) -> logits (B, K, H, W); logits[:, :, i, j] see only codes before (i, j) (and
        the whole conditioning map ``cond``, for the bottom prior of two levels)."""
        return self.head(self.features(self.embed(codes), labels, cond))

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded maps (B, H, W, C) -> the features (B, C, H, W) the head reads: the skips (and the attention
        block), at (i, j) from the embeddings before (i, j) only."""
        labels = self.forward_labels(labels)
        spatial = self.condition(cond)
        # in the layout of the convolutions' weights (``vqgen.device.memory_format``), which the first layer's take as is
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=layout(self.layers[0].v_conv.weight))
        v, h = x, x
        skips = 0.0
        for layer in self.layers:
            v, h, skip = layer(v, h, labels, spatial)
            skips = skips + skip
        if self.attention is not None:
            skips = self.attention(skips)
        return skips

    def cache(self, n: int, labels: torch.Tensor | None = None, **given: torch.Tensor) -> CachedPixelCNN:
        """An empty incremental evaluation for ``n`` maps (``given``: ``cond``, the conditioning maps): the sampler's
        step (``step_logits``, then ``append``)."""
        from vqgen.models.pixelcnn_cache import CachedPixelCNN  # the cache module builds on this one's layers

        return CachedPixelCNN(self, n, labels, **given)
