"""A masked prior over code maps (MaskGIT, Chang et al. 2022): a bidirectional network that predicts hidden
codes from every code it is shown: a transformer (``MaskedTransformerPrior``), or residual convolutions
(``MaskedConvPrior``, ``--backbone conv``), the rest alike.

The input is the whole map, T = H * W positions, with some codes replaced by a [MASK] code (index K,
one more row of the code embedding), plus the row and column embeddings of every position; one more
position in front holds the class embedding (with label dropout a "no class" row too, as the other
priors have, for classifier-free guidance) or one learned start vector when unconditional. The
blocks are the causal transformer's (``vqgen.models.transformer``) without the causal mask, so every
position sees the whole map and the class; the head gives K logits per map position.

Training hides a share of each map's codes drawn from the cosine schedule, r = cos(pi/2 * u) with u
uniform in [0, 1) (many maps mostly hidden, few nearly whole, which is where parallel decoding
starts and ends), and scores the logits at the hidden positions only. Its validation number, and
what `vqgen evaluate` reports, is the NLL of hidden codes at one fixed ratio (``EVAL_MASK_RATIO``),
on hidden positions drawn from a fixed seed: a measure to compare masked priors with each other, not a
likelihood of the map, so no bits per code. Sampling is ``vqgen.sampling.masked``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.config import MaskedConfig
from vqgen.errors import VQGenError
from vqgen.models.prior import CodePrior
from vqgen.models.transformer import TransformerPrior

EVAL_MASK_RATIO = 0.5  # the share of codes hidden for the validation/evaluate NLL
EVAL_MASK_SEED = 0


def cosine_mask_ratio(progress: torch.Tensor | float) -> torch.Tensor:
    """The share of codes hidden at ``progress`` in [0, 1]: cos(pi/2 * progress), 1 at 0 and 0 at 1."""
    return torch.cos(math.pi / 2 * torch.as_tensor(progress, dtype=torch.float64))


def lowest_scores_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, T) scores and (B,) counts -> bool (B, T), True at the ``counts[b]`` lowest scores of row b."""
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def training_mask(batch: int, total: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Which codes of ``batch`` maps of ``total`` positions to hide: per map a ratio from the cosine schedule,
    at least one code, at positions drawn at random. Draws from ``generator`` (default: torch's global RNG)."""
    progress = torch.rand(batch, generator=generator)
    counts = torch.ceil(cosine_mask_ratio(progress) * total).long().clamp(1, total)
    return lowest_scores_mask(torch.rand(batch, total, generator=generator), counts).to(device)


def fixed_ratio_mask(batch: int, total: int, ratio: float, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``round(ratio * total)`` hidden codes per map (at least one), at random positions from ``generator``."""
    counts = torch.full((batch,), max(1, round(ratio * total)), dtype=torch.long)
    return lowest_scores_mask(torch.rand(batch, total, generator=generator), counts).to(device)


def hidden_nll(net: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor | None, hidden: torch.Tensor,
               mask_code: int) -> tuple[torch.Tensor, int]:
    """Summed NLL (nats) of the codes (B, H, W) at the ``hidden`` positions (B, H*W) as ``net`` (a masked prior,
    or its wrapper in training) predicts them from the others, and how many there are."""
    b, h, w = codes.shape
    flat = codes.reshape(b, h * w)
    logits = net(flat.masked_fill(hidden, mask_code).view(b, h, w), labels).flatten(2).transpose(1, 2)[hidden]
    return F.cross_entropy(logits.float(), flat[hidden], reduction="sum"), int(hidden.sum())


class MaskedPrior(CodePrior):
    """What both backbones share: the [MASK] input code, the hidden-code NLL, and no raster-order cache."""

    cfg: MaskedConfig

    @property
    def mask_code(self) -> int:
        """The index of the [MASK] code in the input: K."""
        return self.cfg.num_codes

    def nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean NLL in nats of hidden codes at the evaluation ratio (not of whole maps: see the module notes)."""
        b, h, w = codes.shape
        generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
        hidden = fixed_ratio_mask(b, h * w, EVAL_MASK_RATIO, generator, codes.device)
        total, count = hidden_nll(self, codes, labels, hidden, self.mask_code)
        return total / count

    def cache(self, n: int, labels: torch.Tensor | None = None, **given: torch.Tensor):
        raise VQGenError("a masked prior draws whole maps in parallel steps (vqgen.sampling.masked), not in raster order")


class MaskedTransformerPrior(MaskedPrior, TransformerPrior):
    causal = False
    input_codes_beyond_k = 1

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code maps (B, H, W), [MASK] (``mask_code``) where hidden -> logits (B, K, H, W) of every position."""
        labels = self.forward_labels(labels)
        b, h, w = codes.shape
        x = self.code_embedding(codes.reshape(b, h * w)) + self.positions(torch.arange(h * w, device=codes.device))
        x = self.dropout(torch.cat([self.start_tokens(labels, b)[:, None], x], dim=1))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x[:, 1:]))  # (B, T, K), the class position left out
        return logits.transpose(1, 2).reshape(b, -1, h, w)


class ResidualConvBlock(nn.Module):
    """x + conv3x3(GELU(conv3x3(GELU(x + class bias)))), dropout before the second conv; the second conv starts
    at zero, so a fresh block is the identity."""

    def __init__(self, channels: int, class_rows: int, dropout: float):
        super().__init__()
        self.class_bias = nn.Embedding(class_rows, channels) if class_rows else None
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = x if labels is None else x + self.class_bias(labels)[:, :, None, None]
        return x + self.conv2(self.dropout(F.gelu(self.conv1(F.gelu(h)))))


class MaskedConvPrior(MaskedPrior):
    """The masked prior with a convolutional backbone (``--backbone conv``): the same inputs, training and
    sampling as the transformer's, but the map goes through residual 3x3 convolutions, each seeing its
    neighbours (after L blocks a code sees 4L + 1 positions across), and the class (or "no class") enters
    every block as a bias. On maps of 7x7 and 8x8 from a few thousand images the locality of a convolution
    learns faster than attention does (docs/benchmarks.md#masked-prior-and-parallel-decoding)."""

    def __init__(self, cfg: MaskedConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c, (h, w) = cfg.channels, cfg.latent_shape
        self.code_embedding = nn.Embedding(cfg.num_codes + 1, c)  # the last row is [MASK]
        self.position = nn.Parameter(torch.zeros(c, h, w))
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ResidualConvBlock(c, self.class_rows, cfg.dropout) for _ in range(cfg.num_layers))
        self.head = nn.Conv2d(c, cfg.num_codes, 1)
        nn.init.normal_(self.code_embedding.weight, std=0.02)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code maps (B, H, W), [MASK] (``mask_code``) where hidden -> logits (B, K, H, W) of every position."""
        labels = self.forward_labels(labels)
        x = self.dropout(self.code_embedding(codes).permute(0, 3, 1, 2) + self.position)
        for block in self.blocks:
            x = block(x, labels)
        return self.head(F.gelu(x))


def masked_prior(cfg: MaskedConfig) -> MaskedPrior:
    """The masked prior of ``cfg.backbone``, freshly initialised."""
    return MaskedConvPrior(cfg) if cfg.backbone == "conv" else MaskedTransformerPrior(cfg)
