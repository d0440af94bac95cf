"""The gated PixelCNN's incremental step (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"): per-layer caches, and per step only the activations the new position changes: the
vertical stacks once per row, the horizontal stacks and the head at one position. Its logits equal the full
pass's (``vqgen.models.pixelcnn``) up to float rounding (the same sums, added in another order). The bottom
prior of two levels adds a per-position bias from the top map to every gated layer: a fixed input, computed
once per sample, that the caches only need to add row by row.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.models.pixelcnn import GatedLayer, GatedPixelCNN, gate


def _dense(conv: torch.nn.Conv2d) -> torch.Tensor:
    """A (1 x kw) conv's weight (O, I, 1, kw) as a matrix (kw * I, O) for channel-last windows."""
    out_ch, in_ch, _, kw = conv.weight.shape
    return conv.weight[:, :, 0, :].permute(2, 1, 0).reshape(kw * in_ch, out_ch).contiguous()


class DenseHead:
    """An output head (ReLU, 1x1 conv, ReLU, 1x1 conv) as two matmuls over the features (B, C) of one position."""

    def __init__(self, head: nn.Sequential):
        _, conv1, _, conv2 = head
        self.weight1, self.bias1 = _dense(conv1), conv1.bias
        self.weight2, self.bias2 = _dense(conv2), conv2.bias

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        hidden = torch.addmm(self.bias1, features.relu(), self.weight1).relu_()
        return torch.addmm(self.bias2, hidden, self.weight2)


class _LayerCache:
    """One gated layer's weights and caches for incremental evaluation.

    * ``v_rows`` (B, C, p+1, W+2p): the last p+1 rows of the vertical stack's input, zero padded
      as forward() pads it: exactly the vertical conv's window for one output row;
    * ``row_bias`` (B, W, 2C): everything the horizontal pre-activation of the current row gets
      besides its own conv: the vertical stack's term (previous row through v_to_h), the class
      bias (and the spatial bias of that row) and the h_conv bias;
    * ``h_row`` (B, W+p, C): the current row of the horizontal stack's input (channel-last, p
      zero columns on the left); for the first layer, the code embeddings of the row.
    """

    def __init__(self, layer: GatedLayer, labels: torch.Tensor | None, n: int, width: int, like: torch.Tensor,
                 features: torch.Tensor | None = None):
        self.first, self.p, self.c = layer.first, layer.pad, layer.skip.in_channels
        self.v_conv, self.v_to_h = layer.v_conv, layer.v_to_h
        self.h_weight, self.h_bias = _dense(layer.h_conv), layer.h_conv.bias
        if layer.h_out is not None:  # the last layer has none
            self.out_weight, self.out_bias = _dense(layer.h_out), layer.h_out.bias
        self.skip_weight, self.skip_bias = _dense(layer.skip), layer.skip.bias
        # 0.0 each when unconditional; (B, 2C, 1, 1) per class; (B, 2C, H, W) with a conditioning map
        self.class_v, self.class_h = layer.class_bias(labels, features)
        self.v_rows = like.new_zeros(n, self.c, self.p + 1, width + 2 * self.p)
        self.h_row = like.new_zeros(n, width + self.p, self.c)
        self.rows_done = 0  # rows pushed through the vertical stack
        # Row 0 of the horizontal stack sees the zero row that shift_down() inserts.
        self._set_row_bias(like.new_zeros(n, 2 * self.c, 1, width))

    @staticmethod
    def _bias_row(bias: torch.Tensor | float, i: int) -> torch.Tensor | float:
        """Row i (B, 2C, 1, W or 1) of a bias; a per-class bias is the same in every row."""
        if not isinstance(bias, torch.Tensor) or bias.shape[2] == 1:
            return bias
        return bias[:, :, i : i + 1]

    def _set_row_bias(self, v_pre: torch.Tensor) -> None:
        """The horizontal stack's bias for row ``rows_done``, given the vertical pre-activations of the row above."""
        v_term = self.v_to_h(v_pre)[:, :, 0, :].transpose(1, 2)  # (B, W, 2C)
        class_h = self._bias_row(self.class_h, self.rows_done)
        class_h = class_h[:, :, 0, :].transpose(1, 2) if isinstance(class_h, torch.Tensor) else 0.0
        self.row_bias = (v_term + class_h).contiguous()
        if self.first:  # shift_right() puts a zero, not the conv's bias, in column 0
            self.row_bias[:, 1:] += self.h_bias
        else:
            self.row_bias += self.h_bias

    def vertical_row(self, v_in: torch.Tensor) -> torch.Tensor:
        """Push a finished row (B, C, 1, W) of this layer's vertical input; return its output row.

        Its pre-activations feed the horizontal stack of the *next* row (forward's shift_down).
        """
        p = self.p
        self.v_rows = torch.cat([self.v_rows[:, :, 1:], F.pad(v_in, (p, p))], dim=2)
        v_pre = self.v_conv(self.v_rows) + self._bias_row(self.class_v, self.rows_done)
        self.rows_done += 1
        self._set_row_bias(v_pre)
        return gate(v_pre)

    def horizontal_pre(self, j: int) -> torch.Tensor:
        """Pre-activation (B, 2C) of the horizontal stack at column j of the current row."""
        bias = self.row_bias[:, j]
        if self.first:  # forward's shift_right: the conv at column j - 1, over earlier codes only
            if j == 0:
                return bias
            window = self.h_row[:, j - 1 : j + self.p]
        else:  # columns j - p .. j of the previous layer's output
            window = self.h_row[:, j : j + self.p + 1]
        return torch.addmm(bias, window.reshape(window.shape[0], -1), self.h_weight)


class CachedPixelCNN:
    """Incremental raster-order evaluation of a GatedPixelCNN for a batch of ``n`` code maps.

    Per row ``i``: ``begin_row(codes of row i-1)`` runs the vertical stacks over that row once.
    Per position ``(i, j)``: ``logits(j)`` runs the horizontal stacks and the head at that one
    position (small matmuls), then ``put(j, codes)`` stores the chosen codes in the row caches.
    The attention block, if any, runs per position too, over the keys and values cached so far.
    Dropout is skipped (sampling is eval-mode). ``cond``: the conditioning map of each of the n
    maps, for a prior that has one (the bottom prior of two levels).
    """

    def __init__(self, model: GatedPixelCNN, n: int, labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None):
        labels = model.check_labels(labels)
        features = model.condition(cond)
        self.embed = model.embed  # code (and, for stacks, depth) embeddings
        like = model.embedding.weight
        (height, width), c = model.cfg.positions, model.cfg.channels
        self.layers = [_LayerCache(layer, labels, n, width, like, features) for layer in model.layers]
        self.p = self.layers[0].p
        # Skips: the gated features of all layers side by side, mapped by one matmul.
        self.gated = like.new_zeros(n, len(self.layers) * c)
        self.skip_weight = torch.cat([layer.skip_weight for layer in self.layers])
        self.skip_bias = sum(layer.skip_bias for layer in self.layers)
        self.head = DenseHead(model.head)
        # where the raster-order interface (prefill, step_logits, append) stands
        self.width, self.total = width, width * height
        self.t = 0
        self.attention = model.attention
        if self.attention is not None:  # keys and values (B, heads, T, C / heads) of the positions so far
            heads = self.attention.attention.heads
            self.keys = like.new_zeros(n, heads, self.total, c // heads)
            self.values = torch.zeros_like(self.keys)
        # codes of the current row (a stack of codes a position with depth heads)
        self.row = torch.zeros(n, width, *model.stack_shape, dtype=torch.long, device=like.device)

    def begin_row(self, previous_codes: torch.Tensor | None) -> None:
        """Start a new row; ``previous_codes`` (B, W) is the finished row above (None for row 0)."""
        if previous_codes is None:
            return
        v = self.embed(previous_codes).permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, W)
        for layer in self.layers:
            v = layer.vertical_row(v)

    def logits(self, j: int) -> torch.Tensor:
        """Logits (B, K) at column j of the current row, given the codes before it (with an attention block,
        j must be the column of raster position ``t``, as ``step_logits`` has it)."""
        return self.head(self.features(j))

    def features(self, j: int) -> torch.Tensor:
        """The features (B, C) the head reads at column j of the current row (see ``logits``)."""
        layers, c, p = self.layers, self.layers[0].c, self.p
        for index, layer in enumerate(layers):
            pre = layer.horizontal_pre(j)
            g = self.gated[:, index * c : (index + 1) * c]
            torch.mul(torch.tanh(pre[:, :c]), torch.sigmoid(pre[:, c:]), out=g)
            if index + 1 < len(layers):  # the last layer's horizontal output is never used
                h_new = torch.addmm(layer.out_bias, g, layer.out_weight)
                if not layer.first:
                    h_new += layer.h_row[:, j + p]
                layers[index + 1].h_row[:, j + p] = h_new
        skips = torch.addmm(self.skip_bias, self.gated, self.skip_weight)
        if self.attention is not None:
            skips = self.attention.step(skips, self.keys, self.values, self.t)
        return skips

    def put(self, j: int, codes: torch.Tensor) -> None:
        """Store the codes (B,) (with depth heads: the stacks (B, d)) chosen at column j of the current row."""
        self.layers[0].h_row[:, j + self.p] = self.embed(codes, j)

    # ---- raster order, one position after another (what vqgen.sampling.cached drives)

    def prefill(self, codes: torch.Tensor) -> None:
        """Take the first ``t`` codes (B, t) of the maps, in raster order, as given."""
        w, start = self.width, codes.shape[1]
        # rows above the start only feed the vertical stacks, unless the attention needs their keys
        rows = 0 if self.attention is not None else start // w
        for i in range(rows):
            self.begin_row(codes[:, i * w : (i + 1) * w])
        self.t = rows * w
        for t in range(self.t, start):
            self.step_logits()
            self.append(codes[:, t])

    def step_logits(self) -> torch.Tensor:
        """Logits (B, K) at the next raster position, given the codes before it."""
        return self.logits(self.t % self.width)

    def step_features(self) -> torch.Tensor:
        """The features (B, C) the head reads at the next raster position."""
        return self.features(self.t % self.width)

    def append(self, codes: torch.Tensor) -> None:
        """Store the codes (B,) chosen at the next raster position; move on."""
        j = self.t % self.width
        self.put(j, codes)
        self.row[:, j] = codes
        self.t += 1
        if j == self.width - 1 and self.t < self.total:
            self.begin_row(self.row)
