"""A decoder-only causal transformer prior over code maps (GPT-style), optionally class-conditional.

The code map (H, W) is read as a sequence of T = H * W codes in raster order, and position t of
the input holds what is known before code t:

* position 0: a start token, the class embedding when conditional (with label dropout one more
  "no class" row, as the PixelCNN has, for classifier-free guidance), one learned vector otherwise;
* position t > 0: the embedding of code t - 1;
* every position: the row and column embeddings of the code it predicts, (i, j) = divmod(t, W);

then pre-norm blocks (x + attention(LayerNorm(x)), x + MLP(LayerNorm(x))) with causal self-attention,
a final LayerNorm and K logits per position. The logits at t see codes 0 .. t-1 only.

Positions are 2-D, a learned row embedding plus a learned column embedding, rather than one learned
vector per position: H + W vectors instead of H * W, each trained by a whole row (or column) of every
map instead of by one position, and "the code above" is found the same way everywhere (same column
embedding, previous row), which matters on datasets of a few thousand maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vqgen.config import TransformerConfig
from vqgen.models.attention import MultiHeadAttention
from vqgen.models.prior import CodePrior


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.channels
        self.net = nn.Sequential(
            nn.Linear(cfg.channels, hidden), nn.GELU(), nn.Linear(hidden, cfg.channels), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """A pre-norm block; ``causal`` False: every position attends to every other (the masked prior)."""

    def __init__(self, cfg: TransformerConfig, causal: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.channels)
        self.attention = MultiHeadAttention(cfg.channels, cfg.num_heads, cfg.dropout, causal)
        self.norm2 = nn.LayerNorm(cfg.channels)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerPrior(CodePrior):
    causal = True
    input_codes_beyond_k = 0  # the masked prior's [MASK] code is one more row of the code embedding

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        h, w = cfg.latent_shape
        c = cfg.channels
        self.code_embedding = nn.Embedding(cfg.num_codes + self.input_codes_beyond_k, c)
        self.start = nn.Embedding(max(1, self.class_rows), c)  # row 0 is the start token when unconditional
        self.row_embedding = nn.Embedding(h, c)
        self.column_embedding = nn.Embedding(w, c)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, self.causal) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, cfg.num_codes)
        self.apply(self._init_weights)
        # GPT-2's scaling: each block adds two residual branches; keep the sum's variance in check
        for block in self.blocks:
            for branch in (block.attention.out, block.mlp.net[2]):
                nn.init.normal_(branch.weight, std=0.02 / math.sqrt(2 * cfg.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def start_tokens(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """The input at position 0 (n, C): the class embeddings, or the one start token."""
        if labels is None:
            labels = torch.zeros(n, dtype=torch.long, device=self.start.weight.device)
        return self.start(labels)

    def positions(self, t: torch.Tensor) -> torch.Tensor:
        """Position embeddings (..., C) of raster positions ``t``: row embedding + column embedding."""
        w = self.cfg.latent_shape[1]
        return self.row_embedding(t // w) + self.column_embedding(t % w)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code maps (B, H, W) -> logits (B, K, H, W); logits[:, :, i, j] see only codes before (i, j)."""
        labels = self.forward_labels(labels)
        b, h, w = codes.shape
        flat = codes.reshape(b, h * w)
        x = torch.cat([self.start_tokens(labels, b)[:, None], self.code_embedding(flat[:, :-1])], dim=1)
        x = self.dropout(x + self.positions(torch.arange(h * w, device=codes.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))  # (B, T, K)
        return logits.transpose(1, 2).reshape(b, -1, h, w)

    def cache(self, n: int, labels: torch.Tensor | None = None) -> CachedTransformer:
        """An empty incremental evaluation for ``n`` maps: the sampler's step (``step_logits``, then ``append``)."""
        return CachedTransformer(self, n, labels)


# ----------------------------------------------------------------------------- the incremental step
# A full pass over T positions costs every block T queries against T keys; sampling with it costs that T times
# over. The cache keeps, per block, the keys and values of the positions done so far, so each step runs the
# blocks at the one new position: its query attends to the cached keys (and its own), which is what the causal
# mask lets it see in the full pass. Its logits equal the full pass's up to float rounding. Dropout is skipped
# (sampling is eval-mode).


class CachedTransformer:
    """Incremental raster-order evaluation of a TransformerPrior for a batch of ``n`` code maps."""

    def __init__(self, model: TransformerPrior, n: int, labels: torch.Tensor | None = None):
        labels = model.check_labels(labels)
        self.model = model
        cfg = model.cfg
        self.total = cfg.latent_shape[0] * cfg.latent_shape[1]
        like = model.head.weight
        shape = (n, cfg.num_heads, self.total, cfg.channels // cfg.num_heads)
        self.keys = [like.new_zeros(shape) for _ in model.blocks]
        self.values = [like.new_zeros(shape) for _ in model.blocks]
        self.t = 0
        self.x = model.start_tokens(labels, n) + self._position()  # the input at position t (n, C)

    def _position(self) -> torch.Tensor:
        return self.model.positions(torch.tensor(self.t, device=self.model.head.weight.device))

    def prefill(self, codes: torch.Tensor) -> None:
        """Take the first ``t`` codes (n, t) of the maps, in raster order, as given."""
        for code in codes.unbind(1):
            self.step_logits()  # fills the keys and values of this position
            self.append(code)

    def step_logits(self) -> torch.Tensor:
        """Logits (n, K) at position t, given the codes before it; caches its keys and values."""
        t, x = self.t, self.x[:, None]  # (n, 1, C)
        for block, keys, values in zip(self.model.blocks, self.keys, self.values):
            x = x + block.attention.step(block.norm1(x), keys, values, t)
            x = x + block.mlp(block.norm2(x))
        return self.model.head(self.model.norm(x[:, 0]))

    def append(self, codes: torch.Tensor) -> None:
        """Store the codes (n,) chosen at position t: they are the input of position t + 1."""
        self.t += 1
        if self.t < self.total:
            self.x = self.model.code_embedding(codes) + self._position()
