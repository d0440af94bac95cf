"""VQ-VAE (van den Oord et al. 2017): conv encoder -> quantizer -> mirrored conv decoder; with
``levels`` 2, VQ-VAE-2 (Razavi et al. 2019): a bottom and a top code map, one quantizer each.

The quantizer is ``--quantizer``: nearest-code VQ (``quantizer.py``), FSQ (``fsq.py``) or residual
VQ (``rvq.py``, one level only).

Two levels: the encoder's features h (at the --downsamples factor f) feed the top level, which encodes
them to f*2 and quantizes them (top codes); the decoded top vectors, beside h, form the bottom
quantizer's input (bottom codes); the decoder takes the bottom vectors and the upsampled top ones.

Images enter in [0, 1]; the networks work on [-1, 1] (``to_model``/``from_model`` convert), and
the reconstruction loss (``vqgen.losses``) is computed in that [-1, 1] space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn as nn

from vqgen.config import VQVAEConfig
from vqgen.errors import VQGenError
from vqgen.models.blocks import ResidualBlock, down_layers, scaled_down_layers, scaled_up_layers, up_layers
from vqgen.models.fsq import FiniteScalarQuantizer
from vqgen.models.quantizer import QuantizerOutput, VectorQuantizer
from vqgen.models.rvq import ResidualVectorQuantizer

__all__ = ["Codes", "Decoder", "Encoder", "ResidualBlock", "TopLevel", "TwoLevelOutput", "MAP_NAMES", "VQVAE", "VQVAEConfig", "level_shapes"]


class Encoder(nn.Module):
    """Images (model space) -> encoder outputs of dimension D at the latent resolution; with ``out_channels``
    0, the (activated) trunk features instead, which the top level of VQ-VAE-2 reads."""

    def __init__(self, cfg: VQVAEConfig, out_channels: int | None = None):
        super().__init__()
        out_channels = cfg.code_dim if out_channels is None else out_channels
        if cfg.multipliers:
            layers = scaled_down_layers(cfg)
        else:
            layers = down_layers(cfg, cfg.in_channels, cfg.hidden_channels, cfg.num_downsamples)
        if out_channels:
            layers.append(nn.Conv2d(cfg.latent_channels, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Quantized vectors (``in_channels``: D, or 2D for VQ-VAE-2's bottom and upsampled top) -> image (model space)."""

    def __init__(self, cfg: VQVAEConfig, in_channels: int | None = None):
        super().__init__()
        in_channels = in_channels or cfg.code_dim
        if cfg.multipliers:
            layers = scaled_up_layers(cfg, in_channels)
        else:
            layers = up_layers(cfg, in_channels, cfg.hidden_channels, cfg.num_downsamples, cfg.in_channels,
                               cfg.head_channels)
        self.net = nn.Sequential(*layers)

    @property
    def last_layer(self) -> nn.Module:
        return self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def make_quantizer(cfg: VQVAEConfig, dim: int | None = None) -> nn.Module:
    """The quantizer ``cfg.quantizer`` names, for encoder outputs of ``dim`` (default D) channels.

    Every kind has forward -> QuantizerOutput, encode, decode_indices, set_restart_horizon, dead_codes.
    """
    dim = dim or cfg.code_dim
    if cfg.quantizer == "fsq":
        return FiniteScalarQuantizer(cfg.fsq_shape, dim, tail_weight=cfg.fsq_tail)
    options = dict(
        beta=cfg.beta, ema=cfg.ema, decay=cfg.decay, kmeans_init=cfg.kmeans_init, restart_dead=cfg.restart_dead,
        dead_threshold=cfg.dead_threshold, restart_every=cfg.restart_every, restart_stop=cfg.restart_stop,
        cosine=cfg.cosine, codebook_dim=cfg.codebook_dim, rotation_trick=cfg.rotation_trick,
    )
    if cfg.quantizer == "rvq":
        return ResidualVectorQuantizer(cfg.rvq_depth, cfg.num_codes, dim, **options)
    return VectorQuantizer(cfg.num_codes, dim, **options)


class TopLevel(nn.Module):
    """VQ-VAE-2's top level (Razavi et al. 2019): it encodes the bottom encoder's features 2x further down,
    quantizes them with its own codebook, and decodes them back up to the bottom resolution, where they join
    the bottom encoder's features at the bottom quantizer's input; the main decoder reads both levels, the
    top one upsampled by a transposed conv."""

    def __init__(self, cfg: VQVAEConfig, quantizer: nn.Module):
        super().__init__()
        c, d = cfg.latent_channels, cfg.code_dim
        self.encoder = nn.Sequential(*down_layers(cfg, c, c, 1), nn.Conv2d(c, d, 1))
        self.quantizer = quantizer
        self.decoder = nn.Sequential(*up_layers(cfg, d, c, 1, d))
        self.merge = nn.Conv2d(c + d, d, 1)
        self.upsample = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)

    def bottom_input(self, features: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """The bottom quantizer's input: the bottom features beside the decoded top vectors."""
        return self.merge(torch.cat([features, self.decoder(top)], dim=1))

    def decoder_input(self, bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return torch.cat([bottom, self.upsample(top)], dim=1)


@dataclass
class TwoLevelOutput(QuantizerOutput):
    """The bottom quantizer's output with both levels' losses summed; ``top`` is the top quantizer's own."""

    top: QuantizerOutput | None = None


def both_levels(bottom: QuantizerOutput, top: QuantizerOutput) -> TwoLevelOutput:
    return TwoLevelOutput(
        quantized=bottom.quantized, indices=bottom.indices, loss=bottom.loss + top.loss,
        commitment=bottom.commitment + top.commitment, codebook_loss=bottom.codebook_loss + top.codebook_loss, top=top,
    )


Codes = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]  # one map (B, h, w), or (top, bottom) maps
MAP_NAMES = {1: ("codes",), 2: ("codes_top", "codes")}  # the maps' names in code files, in the order of Codes


def level_shapes(cfg: VQVAEConfig) -> dict[str, Any]:
    """What files record of the levels: ``levels``, and with two ``latent_shape_top`` (``latent_shape``, the
    bottom map's, they record anyway)."""
    top = {"latent_shape_top": list(cfg.top_latent_shape)} if cfg.levels == 2 else {}
    return {"levels": cfg.levels, **top}


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        cfg = cfg.sized()
        cfg.validate()
        self.cfg = cfg
        two = cfg.levels == 2
        self.encoder = Encoder(cfg, out_channels=0 if two else None)
        self.quantizer = make_quantizer(cfg)  # the bottom one with two levels
        if two:
            self.top = TopLevel(cfg, make_quantizer(cfg))
        self.decoder = Decoder(cfg, in_channels=2 * cfg.code_dim if two else cfg.code_dim)

    @property
    def levels(self) -> int:
        return self.cfg.levels

    @property
    def quantizers(self) -> dict[str, nn.Module]:
        """Each level's quantizer by name: {"bottom"} (one level: the only one), and "top" with two levels."""
        return {"bottom": self.quantizer, **({"top": self.top.quantizer} if self.levels == 2 else {})}

    @staticmethod
    def to_model(images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    @staticmethod
    def from_model(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Images in [0, 1] -> (reconstruction in model space [-1, 1], quantizer output; with two levels a
        ``TwoLevelOutput``: the bottom's, both levels' losses summed, and the top's in ``.top``)."""
        if self.levels == 1:
            q = self.quantizer(self.encoder(self.to_model(images)))
            return self.decoder(q.quantized), q
        features = self.encoder(self.to_model(images))
        top = self.top.quantizer(self.top.encoder(features))
        bottom = self.quantizer(self.top.bottom_input(features, top.quantized))
        return self.decoder(self.top.decoder_input(bottom.quantized, top.quantized)), both_levels(bottom, top)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Codes:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, h, w) (rvq: stacks (B, depth, h, w)); with two levels
        (top, bottom) maps."""
        return self.features_to_codes(self.encoder(self.to_model(images)))

    @torch.no_grad()
    def features_to_codes(self, features: torch.Tensor) -> Codes:
        """The encoder's outputs -> code indices (as ``encode``)."""
        if self.levels == 1:
            return self.quantizer.encode(features)
        top = self.top.quantizer.encode(self.top.encoder(features))
        bottom_input = self.top.bottom_input(features, self.top.quantizer.decode_indices(top))
        return top, self.quantizer.encode(bottom_input)

    @torch.no_grad()
    def decode(self, codes: Codes) -> torch.Tensor:
        """Code indices (B, h, w) (rvq: (B, depth, h, w)), or (top, bottom) maps with two levels -> images
        (B, C, H, W) in [0, 1]."""
        if self.levels == 1:
            return self.from_model(self.decoder(self.quantizer.decode_indices(codes)))
        if not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise VQGenError("this VQ-VAE has two levels: decode needs (top, bottom) code maps")
        top, bottom = self.top.quantizer.decode_indices(codes[0]), self.quantizer.decode_indices(codes[1])
        return self.from_model(self.decoder(self.top.decoder_input(bottom, top)))
