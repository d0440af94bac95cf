"""The cached sampler of a gated PixelCNN: the same codes as ``sample_full``, much faster.

``sample_cached`` (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models") keeps per-layer caches and computes, per step, only the activations the new position
changes: the vertical stacks once per row, the horizontal stacks and the head at one position.

Both samplers draw through ``pick_codes`` with the same Gumbel noise in the same order, so given
the same seed they produce identical codes. The cached logits equal the full ones only up to
float rounding (the same sums, added in another order), which could flip a near-tied draw; so
the cached sampler flags every draw that rounding of that size could change (a few in 10^5) and
checks those against one full pass over the finished map, redrawing from the first wrong one.

The bottom prior of two levels adds a per-position bias from the top map to every gated layer: a
fixed input, computed once per sample, that the caches only need to add row by row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqgen.models.pixelcnn import GatedLayer, GatedPixelCNN, gate
from vqgen.sampling.draw import (
    TIE_TOLERANCE,
    Guidance,
    NearTies,
    correct_near_ties,
    exact_float32,
    gumbel_noise,
    is_decisive,
    pick_codes,
)


def _dense(conv: torch.nn.Conv2d) -> torch.Tensor:
    """A (1 x kw) conv's weight (O, I, 1, kw) as a matrix (kw * I, O) for channel-last windows."""
    out_ch, in_ch, _, kw = conv.weight.shape
    return conv.weight[:, :, 0, :].permute(2, 1, 0).reshape(kw * in_ch, out_ch).contiguous()


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
    Dropout is skipped (sampling is eval-mode). ``cond``: the conditioning map of each of the n
    maps, for a prior that has one (the bottom prior of two levels).
    """

    def __init__(self, model: GatedPixelCNN, n: int, labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None):
        labels = model.check_labels(labels)
        features = model.condition(cond)
        self.embedding = model.embedding
        like = model.embedding.weight
        width, c = model.cfg.latent_shape[1], model.cfg.channels
        self.layers = [_LayerCache(layer, labels, n, width, like, features) for layer in model.layers]
        self.p = self.layers[0].p
        # Skips: the gated features of all layers side by side, mapped by one matmul.
        self.gated = like.new_zeros(n, len(self.layers) * c)
        self.skip_weight = torch.cat([layer.skip_weight for layer in self.layers])
        self.skip_bias = sum(layer.skip_bias for layer in self.layers)
        _, conv1, _, conv2 = model.head  # ReLU, 1x1 conv, ReLU, 1x1 conv
        self.head1_weight, self.head1_bias = _dense(conv1), conv1.bias
        self.head2_weight, self.head2_bias = _dense(conv2), conv2.bias

    def begin_row(self, previous_codes: torch.Tensor | None) -> None:
        """Start a new row; ``previous_codes`` (B, W) is the finished row above (None for row 0)."""
        if previous_codes is None:
            return
        v = self.embedding(previous_codes).permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, W)
        for layer in self.layers:
            v = layer.vertical_row(v)

    def logits(self, j: int) -> torch.Tensor:
        """Logits (B, K) at column j of the current row, given the codes before it."""
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
        skips = torch.addmm(self.skip_bias, self.gated, self.skip_weight).relu_()
        hidden = torch.addmm(self.head1_bias, skips, self.head1_weight).relu_()
        return torch.addmm(self.head2_bias, hidden, self.head2_weight)

    def put(self, j: int, codes: torch.Tensor) -> None:
        """Store the codes (B,) chosen at column j of the current row."""
        self.layers[0].h_row[:, j + self.p] = self.embedding(codes)


@exact_float32()
@torch.no_grad()
def sample_cached(
    model: GatedPixelCNN,
    n: int,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    tolerance: float = TIE_TOLERANCE,
    guidance: float = 1.0,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``n`` code maps with per-layer caches: the same codes as ``sample_full``, much faster.

    Draws that float rounding of the cached logits could change (near-ties, see ``is_decisive``;
    ``tolerance`` 0 trusts every draw) are checked once the map is done, against one full pass
    over it (see ``correct_near_ties``). ``guidance`` S != 1: classifier-free guidance, the
    conditional and unconditional rows side by side in the caches. ``cond``: the conditioning
    map of each sample (the top codes, for the bottom prior of two levels).
    """
    h, w = model.cfg.latent_shape
    codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
    guide = Guidance.for_model(model, labels, guidance, device)
    given = guide.conditioning(cond, device)
    generator = generator if generator is not None else torch.default_generator

    def fast_pass(start: int) -> tuple[dict[int, torch.Tensor], NearTies]:
        return _cached_pass(model, codes, guide, given, start, temperature, top_k, generator, tolerance)

    def exact_logits() -> torch.Tensor:
        return guide.combine(model(guide.rows(codes), guide.labels, **given)).flatten(2)

    correct_near_ties(codes.view(n, h * w), fast_pass, exact_logits, temperature, top_k, generator)
    return codes


def _cached_pass(
    model: GatedPixelCNN,
    codes: torch.Tensor,
    guide: Guidance,
    given: dict[str, torch.Tensor],
    start: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    tolerance: float,
) -> tuple[dict[int, torch.Tensor], NearTies]:
    """Draw ``codes`` from raster position ``start`` on (the earlier codes are given) with the cached
    network. Returns the generator state before each draw and the near-ties as (position, noise)."""
    n, h, w = codes.shape
    state = CachedPixelCNN(model, guide.batch_size(n), guide.labels, **given)
    tolerance = guide.tolerance(tolerance)
    states, near_ties = {}, []
    for i in range(h):
        state.begin_row(guide.rows(codes[:, i - 1]) if i > 0 else None)
        if (i + 1) * w <= start:  # rows above only feed the vertical stacks
            continue
        for j in range(w):
            t = i * w + j
            raw = state.logits(j)
            if t >= start:
                logits = guide.combine(raw)
                states[t] = generator.get_state()
                noise = gumbel_noise(logits.shape, generator, logits.device)
                codes[:, i, j] = pick_codes(logits, noise, temperature, top_k)
                magnitude = guide.magnitude(raw)
                if tolerance > 0 and not is_decisive(logits, noise, temperature, top_k, tolerance, magnitude):
                    near_ties.append((t, noise))
            state.put(j, guide.rows(codes[:, i, j]))
    return states, near_ties


@exact_float32()
@torch.no_grad()
def cached_logits(model: GatedPixelCNN, codes: torch.Tensor, labels: torch.Tensor | None = None,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, K, H, W) of given code maps, computed position by position by the cached path.

    Equals ``model(codes, labels, cond)`` up to float rounding; used to check the cached sampler.
    """
    n, h, w = codes.shape
    state = CachedPixelCNN(model, n, labels, cond)
    out = torch.empty(n, model.cfg.num_codes, h, w, dtype=model.embedding.weight.dtype, device=codes.device)
    for i in range(h):
        state.begin_row(codes[:, i - 1] if i > 0 else None)
        for j in range(w):
            out[:, :, i, j] = state.logits(j)
            state.put(j, codes[:, i, j])
    return out
