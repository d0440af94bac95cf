"""The transformer prior's key/value cache for the cached sampler (``vqgen.sampling.cached``).

A full pass over T positions costs every block T queries against T keys; sampling with it costs
that T times over. The cache keeps, per block, the keys and values of the positions done so far,
so each step runs the blocks at the one new position: its query attends to the cached keys (and
its own), which is what the causal mask lets it see in the full pass. Its logits equal the full
pass's up to float rounding (the same sums, in other kernels). Dropout is skipped (sampling is
eval-mode).
"""

from __future__ import annotations

import torch

from vqgen.models.transformer import TransformerPrior


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
