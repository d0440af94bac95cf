"""VQ-VAE (van den Oord et al. 2017): conv encoder -> vector quantizer -> mirrored conv decoder.

Images enter in [0, 1]; the networks work on [-1, 1] (``to_model``/``from_model`` convert), and
the reconstruction loss (``vqgen.losses``) is computed in that [-1, 1] space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.errors import VQGenError
from vqgen.models.quantizer import QuantizerOutput, VectorQuantizer


# what a checkpoint written before a field existed meant by leaving it out. restart_stop: restarts
# went on until the end. Such checkpoints also hold dead_threshold as an absolute count per step
# (1.0 by default); it is read as the new relative value, which changes only the dead-code count a
# loaded model reports, since nothing trains on from a finished checkpoint.
LEGACY_VALUES: dict[str, Any] = {"head_channels": 0, "restart_stop": 1.0}


@dataclass
class VQVAEConfig:
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    hidden_channels: int = 128
    res_channels: int = 64
    num_res_blocks: int = 2
    num_downsamples: int = 2  # downsampling factor f = 2 ** num_downsamples
    head_channels: int = 32  # decoder: last upsampling to this many channels, then a 3x3 conv to the image (0: none)
    num_codes: int = 512
    code_dim: int = 64
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    kmeans_init: bool = True
    restart_dead: bool = True
    # dead: usage EMA below this fraction of the mean usage (rows per step / K), i.e. used less
    # than half as often as uniform use would give it. The old absolute 1.0 was 0.65 of the mean
    # at B=16, 7x7, K=512 but 10x the mean at K=8192 (every code re-seeded at every check). Lower
    # values revive codes later (ln(1/t)/(1-decay) steps after they stop): 0.05 and 0.1 lost 1.4
    # and 1.0 dB val PSNR against 0.5 after 3 epochs of the defaults; 0.5 matched the old rule
    dead_threshold: float = 0.5
    restart_every: int = 50
    restart_stop: float = 0.8  # restarts only in the first 80% of the steps (1.0: until the end)
    cosine: bool = False
    codebook_dim: int | None = 6

    @property
    def factor(self) -> int:
        return 2**self.num_downsamples

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.image_size[0] // self.factor, self.image_size[1] // self.factor)

    def validate(self) -> None:
        h, w = self.image_size
        if h % self.factor or w % self.factor:
            raise VQGenError(
                f"image size {h}x{w} is not divisible by the downsampling factor {self.factor}; "
                f"pick --image-size as a multiple of {self.factor} or change --downsamples"
            )
        if self.head_channels < 0:
            raise VQGenError(f"--head-channels must be 0 (no head) or more, not {self.head_channels}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise VQGenError(f"--codebook-dim must be at least 1, not {self.codebook_dim}")
        if not self.dead_threshold >= 0:
            raise VQGenError(f"--dead-threshold must be 0 or more (a fraction of the mean use), not {self.dead_threshold}")
        if not 0 <= self.restart_stop <= 1:
            raise VQGenError(f"--restart-stop must be between 0 and 1 (a fraction of the steps), not {self.restart_stop}")
        if self.num_codes < 2 or self.code_dim < 1:
            raise VQGenError(f"need at least 2 codes of dimension >= 1 (got K={self.num_codes}, D={self.code_dim})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQVAEConfig:
        known = {f.name for f in fields(cls)}
        d = {**LEGACY_VALUES, **{k: v for k, v in d.items() if k in known}}
        d["image_size"] = tuple(d["image_size"])
        return cls(**d)


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
