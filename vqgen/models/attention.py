"""Multi-head self-attention over raster positions, shared by the priors: every block of the transformers
(causal, and bidirectional in the masked prior), and the PixelCNN's optional causal block before its head.

``forward`` runs a whole sequence, under the causal mask unless built with ``causal=False``; ``step``
(causal only) runs one new position against the keys and values of the positions before it, which the
cached samplers keep: the same sums as the masked full pass, up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    def __init__(self, channels: int, heads: int, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.attention_dropout = dropout
        self.out_dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) -> queries, keys and values, each (B, heads, T, C / heads)."""
        b, t, c = x.shape
        return self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def merge_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, C / heads) -> the output projection of (B, T, C)."""
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); position t attends to positions 0 .. t (causal), else to all of them."""
        q, k, v = self.split_heads(x)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.causal)
        return self.out_dropout(self.merge_heads(y))

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, t: int) -> torch.Tensor:
        """Position t alone: its input (B, 1, C) -> its output (B, 1, C). Its key and value are written into
        ``keys`` and ``values`` (B, heads, T, C / heads) at t, which hold those of positions 0 .. t-1."""
        q, k, v = self.split_heads(x)
        keys[:, :, t : t + 1], values[:, :, t : t + 1] = k, v
        return self.merge_heads(F.scaled_dot_product_attention(q, keys[:, :, : t + 1], values[:, :, : t + 1]))
