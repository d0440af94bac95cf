"""The configurations of the networks of stage 1: the VQ-VAE (one or two levels, each quantizer) and the
discriminator of its GAN loss. The priors' are in ``config.priors``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vqgen.config import CODEBOOK, DEAD_CODES, MODEL, QUANTIZER, check, from_dict, is_photo, option, to_dict
from vqgen.errors import VQGenError


# ----------------------------------------------------------------------------- models


# what a checkpoint written before a field existed meant by leaving it out. restart_stop: restarts
# went on until the end. Such checkpoints also hold dead_threshold as an absolute count per step
# (1.0 by default); it is read as the new relative value, which changes only the dead-code count a
# loaded model reports, since nothing trains on from a finished checkpoint.
LEGACY_VALUES: dict[str, Any] = {"head_channels": 0, "restart_stop": 1.0, "quantizer": "vq", "rotation_trick": False}
# files from before VQ-VAE-2 and the scaled networks: one level, today's layout
LEGACY_VALUES.update({"levels": 1, "channel_mult": None, "norm": "none", "attention": False})
QUANTIZERS = ("vq", "fsq", "rvq")
VQ_CODES = 1024
# two codebooks of 512 reconstruct photos about 1.5 dB better than one of 1024, and their stacks' prior (depth
# heads) trains in the one-code prior's time (docs/benchmarks.md#two-codebooks-of-512-the-photo-default)
RVQ_CODES = 512
NORMS = ("none", "group")


@dataclass(frozen=True)
class VQVAEConfig:
    help_panel = MODEL
    field_panels = {  # the on/off switches apart: their --no- names need a column of their own
        **{name: QUANTIZER for name in ("quantizer", "num_codes", "code_dim", "codebook_dim", "beta", "decay",
                                        "rotation_trick", "fsq_levels", "fsq_tail", "rvq_depth")},
        **{name: CODEBOOK for name in ("ema", "kmeans_init", "restart_dead", "cosine")},
        **{name: DEAD_CODES for name in ("dead_threshold", "restart_every", "restart_stop")},
    }
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    hidden_channels: int | None = option(
        None, "Channels of the encoder/decoder trunk; default: 64 for grey images up to 32 px (digits), else 128.",
        flag="--hidden")
    res_channels: int | None = option(None, "Bottleneck channels of residual blocks; default: half of --hidden.")
    num_res_blocks: int = option(2, "Residual blocks in encoder and decoder.", flag="--res-blocks")
    num_downsamples: int = option(
        2, "Stride-2 stages n; downsampling factor 2^n (2: 28x28 -> 7x7).", flag="--downsamples"
    )
    head_channels: int | None = option(
        None, "Decoder head: the last upsampling gives this many channels, then a 3x3 conv draws the image (0: none); "
        "default: 16 for grey images up to 32 px, else 32."
    )
    quantizer: str | None = option(
        None, "vq (nearest code), fsq (finite scalar quantization, --fsq-levels) or rvq (residual VQ: "
        "--rvq-depth codebooks of K codes each); default: rvq for colour images of 16 px or more (photos) with "
        "--levels 1, else vq."
    )
    num_codes: int | None = option(
        None, f"Codebook size K; default: {VQ_CODES} for vq, {RVQ_CODES} a codebook for rvq; fsq: the product of "
        "--fsq-levels.", short="-K")
    code_dim: int = option(64, "Dimension D of the encoder output / codes.", short="-D")
    beta: float = option(0.25, "Weight of the commitment loss.")
    ema: bool = option(True, "EMA codebook updates (else the loss-based codebook update).")
    decay: float = option(0.99, "EMA decay of codebook statistics.")
    kmeans_init: bool = option(True, "Initialise codes by k-means on the first batch.")
    restart_dead: bool = option(True, "Re-seed unused codes from recent encoder outputs.")
    # relative to the mean count per code, so it means the same for any K; lower values revive codes too late
    # (docs/benchmarks.md#codebook-health)
    dead_threshold: float = option(
        0.5, "A code is dead when its EMA count falls below this fraction of the mean count per code."
    )
    restart_every: int = option(50, "Steps between dead-code checks.")
    restart_stop: float = option(
        0.8, "Restart dead codes only during this fraction of the training steps (1: until the end)."
    )
    cosine: bool = option(False, "l2-normalised (cosine) codes.")
    codebook_dim: int | None = option(
        6, "Dimension of the codes, with linear in/out projections to D (0: codes of dimension D)."
    )
    rotation_trick: bool = option(
        False, "vq/rvq: the rotation trick (Fifty et al. 2024): the encoder's gradient rotated onto the code, "
        "not copied.", flag="--rotation-trick"
    )
    fsq_levels: str = option("8,8,8", "fsq: levels per channel, comma-separated (8,6,5: 3 channels, K=240).")
    fsq_tail: float = option(
        0.01, "fsq: weight of a penalty on projections beyond +-2, in tanh's flat tails (0: none, as in the paper)."
    )
    rvq_depth: int = option(2, "rvq: codebooks applied to successive residuals (codes per position).")
    levels: int = option(
        1, "Code maps: 1 (VQ-VAE), or 2 (VQ-VAE-2: a bottom map at the --downsamples factor and a top map "
        "2x smaller, one codebook each)."
    )
    channel_mult: str | None = option(
        None, "Channels per resolution, as multiples of --hidden, from the image down (one per resolution: 1,2,2 for "
        "--downsamples 2); residual blocks at every resolution, for 64-256 px images. Default: the light layout."
    )
    norm: str = option("none", "Normalisation in the residual and attention blocks: none or group (GroupNorm).")
    attention: bool = option(False, "A self-attention block after the residual blocks at the lowest resolution.")

    def __post_init__(self) -> None:
        # values implied by others, settled once as the config is made (it is frozen afterwards)
        if self.codebook_dim == 0:  # the command line's way of saying "codes of dimension D"
            object.__setattr__(self, "codebook_dim", None)
        if self.quantizer == "fsq" and self.fsq_shape and min(self.fsq_shape) >= 2:
            object.__setattr__(self, "num_codes", math.prod(self.fsq_shape))

    def sized(self) -> VQVAEConfig:
        """This config with the choices left open (None) made for its images: small grey images (one channel, at
        most 32 px a side, e.g. digits) get the light trunk, everything else the wider one; photos (colour, 16 px
        or more) of one level get residual VQ, everything else one codebook. Models are built from sized configs, so
        checkpoints record the choices made."""
        light = self.in_channels == 1 and max(self.image_size) <= 32
        hidden = (64 if light else 128) if self.hidden_channels is None else self.hidden_channels
        res = hidden // 2 if self.res_channels is None else self.res_channels
        head = (16 if light else 32) if self.head_channels is None else self.head_channels
        photos = is_photo(self.in_channels, self.image_size) and self.levels == 1  # rvq has one level
        quantizer = self.quantizer or ("rvq" if photos else "vq")
        codes = self.num_codes or (RVQ_CODES if quantizer == "rvq" else VQ_CODES)
        return dataclasses.replace(self, hidden_channels=hidden, res_channels=res, head_channels=head,
                                   quantizer=quantizer, num_codes=codes)

    @property
    def fsq_shape(self) -> tuple[int, ...]:
        """--fsq-levels as integers; () when it is not a comma-separated list of integers."""
        parts = str(self.fsq_levels).replace(" ", "").split(",")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()

    @property
    def code_depth(self) -> int:
        """Codes per latent position: --rvq-depth for rvq, else 1 (a quantizer left open: the one for its images)."""
        return self.rvq_depth if (self.quantizer or self.sized().quantizer) == "rvq" else 1

    @property
    def total_codes(self) -> int:
        """Codes of all codebooks together (K x depth): the size of code histograms."""
        return (self.num_codes or self.sized().num_codes) * self.code_depth

    @property
    def factor(self) -> int:
        return 2**self.num_downsamples

    @property
    def latent_shape(self) -> tuple[int, int]:
        """The (bottom) code map's size."""
        return (self.image_size[0] // self.factor, self.image_size[1] // self.factor)

    @property
    def top_latent_shape(self) -> tuple[int, int] | None:
        """The top code map's size (--levels 2), else None."""
        h, w = self.latent_shape
        return (h // 2, w // 2) if self.levels == 2 else None

    @property
    def multipliers(self) -> tuple[int, ...]:
        """--channel-mult as numbers (empty: the light layout)."""
        if not (self.channel_mult or "").strip():
            return ()
        try:
            return tuple(int(part) for part in self.channel_mult.split(","))
        except ValueError:
            raise VQGenError(f"--channel-mult must be whole numbers separated by commas, not {self.channel_mult!r}") from None

    @property
    def latent_channels(self) -> int:
        """Channels of the encoder's and decoder's trunk at the latent resolution."""
        return self.hidden_channels * (self.multipliers[-1] if self.multipliers else 1)

    def validate(self) -> None:
        """Check the options, with those left open chosen for the images (``sized``)."""
        self = self.sized()
        self.validate_quantizer()
        h, w = self.image_size
        check(self.levels in (1, 2), f"--levels must be 1 or 2, not {self.levels}")
        factor = self.factor * self.levels  # the top map of --levels 2 is 2x smaller
        if h % factor or w % factor:
            raise VQGenError(
                f"image size {h}x{w} is not divisible by the downsampling factor {factor}; "
                f"pick --image-size as a multiple of {factor} or change --downsamples"
                + (" or --levels" if self.levels == 2 else "")
            )
        mult = self.multipliers
        check(not mult or len(mult) == self.num_downsamples + 1,
              f"--channel-mult needs {self.num_downsamples + 1} multipliers (the image and each of the "
              f"{self.num_downsamples} --downsamples stages), not {len(mult)}")
        check(all(m >= 1 for m in mult), f"--channel-mult multipliers must be at least 1, not {self.channel_mult!r}")
        check(self.norm in NORMS, f"--norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        for flag, value in (("--hidden", self.hidden_channels), ("--res-channels", self.res_channels)):
            check(value is None or value >= 1, f"{flag} must be at least 1, not {value}")
        if self.head_channels is not None and self.head_channels < 0:
            raise VQGenError(f"--head-channels must be 0 (no head) or more, not {self.head_channels}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise VQGenError(f"--codebook-dim must be at least 1, not {self.codebook_dim}")
        if not self.dead_threshold >= 0:
            raise VQGenError(f"--dead-threshold must be 0 or more (a fraction of the mean use), not {self.dead_threshold}")
        if not 0 <= self.restart_stop <= 1:
            raise VQGenError(f"--restart-stop must be between 0 and 1 (a fraction of the steps), not {self.restart_stop}")
        if self.num_codes < 2 or self.code_dim < 1:
            raise VQGenError(f"need at least 2 codes of dimension >= 1 (got K={self.num_codes}, D={self.code_dim})")

    def validate_quantizer(self) -> None:
        """The --quantizer options (checked before any data is read: a quantizer left open passes)."""
        check(self.quantizer in (None, *QUANTIZERS), f"--quantizer must be one of {', '.join(QUANTIZERS)}, not {self.quantizer!r}")
        if self.quantizer == "fsq":
            check(bool(self.fsq_shape) and min(self.fsq_shape) >= 2,
                  f"--fsq-levels must be comma-separated integers of at least 2 (e.g. 8,6,5), not {self.fsq_levels!r}")
            check(self.num_codes == math.prod(self.fsq_shape),
                  f"fsq: K is the product of --fsq-levels {self.fsq_levels} ({math.prod(self.fsq_shape)}), not {self.num_codes}")
            check(not self.rotation_trick, "--rotation-trick needs a codebook (vq or rvq); fsq rounds instead")
            check(self.fsq_tail >= 0, f"--fsq-tail must be 0 or more, not {self.fsq_tail}")
        if self.quantizer == "rvq":  # the other quantizers ignore it
            check(self.rvq_depth >= 2, f"--rvq-depth must be at least 2 (depth 1 is --quantizer vq), not {self.rvq_depth}")
        check(self.quantizer != "rvq" or self.levels == 1,
              "--quantizer rvq takes --levels 1 (two-level residual VQ stacks are not supported); use vq or fsq")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQVAEConfig:
        return from_dict(cls, d, LEGACY_VALUES)


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 3
    channels: int = 64  # width of the first layer; doubles per stride-2 layer, capped at 8x
    layers: int = 3  # stride-2 layers (each halves the resolution)

    def validate(self) -> None:
        if self.layers < 1:
            raise VQGenError(f"--disc-layers must be at least 1, not {self.layers}")
        if self.channels < 1:
            raise VQGenError(f"--disc-channels must be at least 1, not {self.channels}")

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """The last two 4x4 convs need at least a 4x4 map after the stride-2 layers (2x2 logits)."""
        smallest = 4 * 2**self.layers
        if min(image_size) < smallest:
            h, w = image_size
            raise VQGenError(
                f"--disc-layers {self.layers}: {h}x{w} images are too small (need at least {smallest}x{smallest}); "
                "use fewer discriminator layers"
            )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
