"""VQ-VAE (van den Oord et al. 2017): conv encoder -> vector quantizer -> mirrored conv decoder.

Images enter in [0, 1]; the networks work on [-1, 1] (``to_model``/``from_model`` convert), and
the reconstruction loss (``vqgen.losses``) is computed in that [-1, 1] space.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.config import VQVAEConfig
from vqgen.models.quantizer import QuantizerOutput, VectorQuantizer


class ResidualBlock(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))) as in the VQ-VAE paper."""

    def __init__(self, channels: int, res_channels: int):
        super().__init__()
        self.conv3 = nn.Conv2d(channels, res_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(res_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = cfg.in_channels
        for i in range(cfg.num_downsamples):
            out = cfg.hidden_channels if i == cfg.num_downsamples - 1 else cfg.hidden_channels // 2
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, cfg.hidden_channels, 3, padding=1))
        layers += [ResidualBlock(cfg.hidden_channels, cfg.res_channels) for _ in range(cfg.num_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(cfg.hidden_channels, cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden_channels, 3, padding=1)]
        layers += [ResidualBlock(cfg.hidden_channels, cfg.res_channels) for _ in range(cfg.num_res_blocks)]
        layers.append(nn.ReLU())
        channels = cfg.hidden_channels
        for i in range(cfg.num_downsamples):
            last = i == cfg.num_downsamples - 1
            out = (cfg.head_channels or cfg.in_channels) if last else cfg.hidden_channels // 2
            layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = out
        if cfg.head_channels:
            # a full-resolution 3x3 conv after the last upsampling draws the stroke edges, where most error sits
            layers += [nn.ReLU(), nn.Conv2d(cfg.head_channels, cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    @property
    def last_layer(self) -> nn.Module:
        return self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(
            num_codes=cfg.num_codes,
            dim=cfg.code_dim,
            beta=cfg.beta,
            ema=cfg.ema,
            decay=cfg.decay,
            kmeans_init=cfg.kmeans_init,
            restart_dead=cfg.restart_dead,
            dead_threshold=cfg.dead_threshold,
            restart_every=cfg.restart_every,
            restart_stop=cfg.restart_stop,
            cosine=cfg.cosine,
            codebook_dim=cfg.codebook_dim,
        )
        self.decoder = Decoder(cfg)

    @staticmethod
    def to_model(images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    @staticmethod
    def from_model(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Images in [0, 1] -> (reconstruction in model space [-1, 1], quantizer output)."""
        q = self.quantizer(self.encoder(self.to_model(images)))
        return self.decoder(q.quantized), q

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, h, w)."""
        return self.quantizer.encode(self.encoder(self.to_model(images)))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> images (B, C, H, W) in [0, 1]."""
        return self.from_model(self.decoder(self.quantizer.decode_indices(indices)))
