"""The configurations of the priors over code maps: what every prior records (``PriorConfig``), the gated
PixelCNN, the transformer, the masked prior, and the pair of priors of a two-level VQ-VAE."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vqgen.config import CLASSES, MODEL, STACKS, check, from_dict, option, to_dict
from vqgen.errors import VQGenError


DEFAULT_LABEL_DROPOUT = 0.1  # enough "no class" rows to learn the unconditional mode; costs little conditional NLL
# the guidance `sample` uses for a prior with label dropout, by image kind: the best rows of bench/samples.py
# (digits) and bench/photos.py (photos); docs/benchmarks.md#guidance-by-image-kind
GUIDED_SCALE_GREY = 1.6
GUIDED_SCALE_COLOUR = 4.0
# a masked prior sharpens digits more at the same S: at 1.4 its samples are as often in class as the PixelCNN's
# at 1.6 and as near the real ones (docs/benchmarks.md#guidance-of-the-masked-prior-on-digits)
GUIDED_SCALE_GREY_MASKED = 1.4
# and the temperature of guided sampling: at S = 4, photos sampled at 1.1 had a smaller Fréchet distance and
# more samples in class than at 0.9 over three training seeds (docs/benchmarks.md#temperature-by-image-kind)
GUIDED_TEMPERATURE_GREY = 0.9
GUIDED_TEMPERATURE_COLOUR = 1.1
# the finer codes of residual VQ (depth 2 on): drawn cooler than each position's first code, photo samples come out
# nearer the real ones and more often in class (docs/benchmarks.md#residual-vq-on-photos)
RESIDUAL_TEMPERATURE = 0.7
# the PixelCNN's width by image kind: on the 8x8 maps of a few thousand photos 48 channels sample about as well as
# 64 (about 2 points fewer in class, a little more FD) in two thirds of the time; 56 trained hardly faster than 64
# in float32, no multiple of 16 (docs/benchmarks.md#the-second-round-the-time-target)
PIXELCNN_CHANNELS = 64
PIXELCNN_CHANNELS_PHOTOS = 48


@dataclass(frozen=True)
class PriorConfig:
    """What every prior over code maps records: the maps it models, its classes, label dropout.

    Each architecture subclasses it; ``arch`` (set by the subclass, never by hand) names it in checkpoints.
    """

    help_panel = MODEL
    field_panels = {"label_dropout": CLASSES}
    grey_guidance = GUIDED_SCALE_GREY  # the guidance recorded for grey images (a class attribute, not a field)
    arch: str = dataclasses.field(default="", init=False)
    num_codes: int = 512
    latent_shape: tuple[int, int] = (7, 7)
    num_classes: int = 0  # 0: unconditional
    code_depth: int = 1  # codes per latent position (residual VQ): interleaved along each row
    label_dropout: float | None = option(
        None, "Classifier-free guidance: train with the label replaced by a learned 'no class' row this often, "
        "so that `sample --guidance S` works; default: 0.1 for a class-conditional prior, else 0."
    )

    guidance: float | None = option(
        None, f"The guidance scale S `sample` uses unless told, recorded in the prior file; default: "
        f"{GUIDED_SCALE_GREY:g} for grey images (digits; {GUIDED_SCALE_GREY_MASKED:g} for --arch masked), "
        f"{GUIDED_SCALE_COLOUR:g} for colour ones (photos); 1 without label dropout.", flag="--sample-guidance"
    )
    guided_temperature: float | None = option(
        None, f"The temperature `sample` uses with guidance unless told, recorded in the prior file; default: "
        f"{GUIDED_TEMPERATURE_GREY:g} for grey images (digits), {GUIDED_TEMPERATURE_COLOUR:g} for colour ones "
        f"(photos). Without guidance `sample` uses 1.", flag="--sample-temperature"
    )
    residual_temperature: float | None = option(
        None, f"Codes of a residual VQ-VAE (--quantizer rvq): the temperature `sample` draws each position's finer "
        f"codes (depth 2 on) with unless told, recorded in the prior file; default: {RESIDUAL_TEMPERATURE:g}. The "
        "first code of a position keeps --sample-temperature.", flag="--sample-residual-temperature"
    )

    def with_label_dropout_for(self, conditional: bool):
        """This config with the default label dropout settled: 0.1 when conditional, 0 otherwise."""
        if self.label_dropout is not None:
            return self
        return dataclasses.replace(self, label_dropout=DEFAULT_LABEL_DROPOUT if conditional else 0.0)

    def with_guidance_for(self, channels: int):
        """This config with the sampling guidance and its temperatures settled by image kind (after the label
        dropout): photos want much stronger guidance than digits for samples of the asked class. The finer codes
        of residual VQ get their own temperature."""
        colour = channels == 3
        cfg = self
        if cfg.residual_temperature is None and cfg.code_depth > 1:
            cfg = dataclasses.replace(cfg, residual_temperature=RESIDUAL_TEMPERATURE)
        if cfg.guided_temperature is None:
            temperature = GUIDED_TEMPERATURE_COLOUR if colour else GUIDED_TEMPERATURE_GREY
            cfg = dataclasses.replace(cfg, guided_temperature=temperature)
        if cfg.guidance is not None:
            return cfg
        if not cfg.label_dropout:
            return dataclasses.replace(cfg, guidance=1.0)
        return dataclasses.replace(cfg, guidance=GUIDED_SCALE_COLOUR if colour else cfg.grey_guidance)

    def with_width_for(self, photos: bool):
        """This config with a width left open settled by image kind (the PixelCNN's; the others have one)."""
        return self

    def validate(self) -> None:
        # every architecture has num_layers and channels (with its own defaults and help; None: settled later)
        if (self.num_layers is not None and self.num_layers < 1) or (self.channels is not None and self.channels < 1):
            raise VQGenError("--layers and --channels must be positive")
        if self.label_dropout is not None and not 0 <= self.label_dropout < 1:
            raise VQGenError(f"--label-dropout must be in [0, 1), not {self.label_dropout}")
        if self.label_dropout and not self.num_classes:
            raise VQGenError("--label-dropout needs a class-conditional prior, but this one is unconditional")
        check(self.guidance is None or self.guidance >= 0, f"--sample-guidance must be >= 0, not {self.guidance}")
        check(self.guidance in (None, 1) or self.label_dropout,
              f"--sample-guidance {self.guidance} needs a prior trained with --label-dropout > 0")
        check(self.guided_temperature is None or self.guided_temperature > 0,
              f"--sample-temperature must be positive, not {self.guided_temperature}")
        check(self.residual_temperature is None or self.residual_temperature > 0,
              f"--sample-residual-temperature must be positive, not {self.residual_temperature}")
        check(self.residual_temperature is None or self.code_depth > 1,
              "--sample-residual-temperature is for the codes of a residual VQ-VAE (--quantizer rvq); these have "
              "one code per position")
        check(self.code_depth >= 1 and self.latent_shape[1] % self.code_depth == 0,
              f"a prior over {self.code_depth} codes per position needs a map width divisible by it, "
              f"not {self.latent_shape[1]}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return from_dict(cls, d, {"label_dropout": 0.0})  # files from before label dropout: none


MAX_DEFAULT_LAYERS = 15  # what --layers was for every map; from 14x14 maps on the default stays there


@dataclass(frozen=True)
class PixelCNNConfig(PriorConfig):
    field_panels = {**PriorConfig.field_panels, "depth_heads": STACKS}  # its two flags need a column of their own
    arch: str = dataclasses.field(default="pixelcnn", init=False)
    channels: int | None = option(
        None, f"Channels of the vertical/horizontal stacks; default: {PIXELCNN_CHANNELS}, or "
        f"{PIXELCNN_CHANNELS_PHOTOS} for the one-level codes of photos (colour images of 16 px or more).")
    num_layers: int | None = option(
        None, f"Gated layers; default: enough to see the whole code map (its longer side + 1, at most "
        f"{MAX_DEFAULT_LAYERS}: 8 for 7x7 maps).", flag="--layers")
    kernel_size: int = option(3, "Odd kernel size k of the stacks.")
    # 256 cost a tenth of the training time for nothing measurable; 64 lost half a point of samples in class
    # (docs/benchmarks.md#how-the-recipe-was-chosen)
    head_channels: int = option(128, "Hidden channels of the output head (1x1 convs: --channels -> this -> K).")
    # small code sets overfit without it (docs/benchmarks.md#the-priors-schedule-ema-and-attention)
    dropout: float = option(0.1, "Dropout on the gated horizontal features.")
    attention_heads: int = option(0, "Heads of one causal self-attention block over the whole map between the "
                                     "skips and the head (PixelSNAIL-style); 0: none.")
    # on photos, over two codebooks of 512, the depth heads sample better than the one-code prior in its time; side
    # by side takes 2.3-3x as long (docs/benchmarks.md#two-codebooks-of-512-the-photo-default)
    depth_heads: bool | None = option(
        None, "Codes of a residual VQ-VAE (--quantizer rvq): run over the map's positions, each position's codes "
        "embedded together, and draw them one after another from a head per depth (RQ-Transformer's depth step); "
        "default: on. --side-by-side: one map with a position's codes side by side, a code per raster step "
        "(slower).", flag="--depth-heads/--side-by-side")
    # the bottom prior of a two-level model: conditioned on the top code map (cond_codes codes of cond_shape)
    cond_codes: int = 0  # 0: no conditioning map
    cond_shape: tuple[int, int] = (0, 0)

    def with_width_for(self, photos: bool) -> PixelCNNConfig:
        if self.channels is not None:
            return self
        return dataclasses.replace(self, channels=PIXELCNN_CHANNELS_PHOTOS if photos else PIXELCNN_CHANNELS)

    def sized(self) -> PixelCNNConfig:
        """This config with ``num_layers`` chosen for its map when left open: with 3x3 kernels a stack of
        max(h, w) - 1 layers is the shallowest whose every position sees all the codes before it; two more
        give the last positions some depth beyond that. A width still open is the grey images' (the stage
        settles it by image kind first); depth heads left open are on for residual VQ stacks. Models are built
        from sized configs."""
        cfg = self.with_width_for(photos=False)
        if cfg.depth_heads is None:
            cfg = dataclasses.replace(cfg, depth_heads=cfg.code_depth > 1)
        if cfg.num_layers is not None:
            return cfg
        return dataclasses.replace(cfg, num_layers=min(MAX_DEFAULT_LAYERS, max(cfg.positions) + 1))

    @property
    def stacked(self) -> bool:
        """Whether the network runs over the positions of residual VQ stacks, with a head per depth."""
        return self.code_depth > 1 and self.depth_heads is not False  # left open: on

    @property
    def positions(self) -> tuple[int, int]:
        """The map the gated layers run over: the code map, or its positions for stacks with depth heads."""
        h, w = self.latent_shape
        return (h, w // self.code_depth) if self.stacked else (h, w)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PixelCNNConfig:
        # files from before label dropout: none; from before depth heads: residual VQ stacks side by side
        return from_dict(cls, d, {"label_dropout": 0.0, "depth_heads": False})

    def validate(self) -> None:
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise VQGenError(f"--kernel-size must be odd and >= 3, not {self.kernel_size}")
        check(self.head_channels >= 1, f"--head-channels must be positive, not {self.head_channels}")
        check(not self.depth_heads or self.code_depth > 1,
              "--depth-heads is for the codes of a residual VQ-VAE (--quantizer rvq); these have one code per position")
        width = self.sized().channels
        check(self.attention_heads >= 0 and (self.attention_heads == 0 or width % self.attention_heads == 0),
              f"--attention-heads must be 0 or a divisor of --channels {width}, not {self.attention_heads}")
        super().validate()
        if self.cond_codes:
            (h, w), (ch, cw) = self.latent_shape, self.cond_shape
            check(ch > 0 and cw > 0 and h % ch == 0 and w % cw == 0 and h // ch == w // cw,
                  f"the conditioning map {ch}x{cw} does not scale evenly to the code map {h}x{w}")


@dataclass(frozen=True)
class TransformerConfig(PriorConfig):
    arch: str = dataclasses.field(default="transformer", init=False)
    # shallow and regularised suits a few thousand small maps (docs/benchmarks.md#pixelcnn-against-transformer)
    channels: int = option(160, "Width: channels of the embeddings, attention and residual stream.")
    num_layers: int = option(3, "Transformer blocks.", flag="--layers")
    num_heads: int = option(4, "Attention heads (must divide --channels).", flag="--heads")
    mlp_ratio: int = 4  # hidden width of the MLP, in multiples of the channels
    dropout: float = option(0.1, "Dropout on the input embeddings, attention weights and residual branches.")
    attends = True  # has attention heads (the masked prior's conv backbone has none)

    def validate(self) -> None:
        super().validate()
        if self.attends and (self.num_heads < 1 or self.channels % self.num_heads):
            raise VQGenError(f"--heads must divide --channels {self.channels}, not be {self.num_heads}")
        check(self.code_depth == 1, f"--arch {self.arch} models one code per position, not residual VQ stacks of "
                                    f"{self.code_depth} (the photos' default); use --arch pixelcnn, or codes of a "
                                    "VQ-VAE trained with --quantizer vq")
        if not 0 <= self.dropout < 1:
            raise VQGenError(f"--dropout must be in [0, 1), not {self.dropout}")


@dataclass(frozen=True)
class MaskedConfig(TransformerConfig):
    """The masked prior (MaskGIT): the transformer's blocks without the causal mask, or residual convolutions,
    over the whole map at once."""

    arch: str = dataclasses.field(default="masked", init=False)
    grey_guidance = GUIDED_SCALE_GREY_MASKED
    # convolutions learn 7x7 and 8x8 maps of a few thousand images faster than attention does
    # (docs/benchmarks.md#masked-prior-and-parallel-decoding)
    backbone: str = option(
        "conv", "The network over the map: conv (--layers residual blocks of two 3x3 convolutions, --channels "
        "wide) or transformer (--layers bidirectional transformer blocks)."
    )
    # 96 wide for 21 epochs beat 128 for 12 in the same time (docs/benchmarks.md#masked-prior-and-parallel-decoding)
    channels: int = option(96, "Width: channels of the convolutions, or of the transformer's residual stream.")
    num_layers: int = option(4, "Residual blocks (conv) or transformer blocks.", flag="--layers")

    @property
    def attends(self) -> bool:
        return self.backbone == "transformer"

    def validate(self) -> None:
        super().validate()
        check(self.backbone in MASKED_BACKBONES,
              f"--backbone must be one of {', '.join(MASKED_BACKBONES)}, not {self.backbone!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskedConfig:
        return from_dict(cls, d, {"label_dropout": 0.0, "backbone": "transformer"})  # before the conv backbone


MASKED_BACKBONES = ("transformer", "conv")


DEFAULT_PRIOR_ARCH = "pixelcnn"
PRIOR_ARCHS: dict[str, type[PriorConfig]] = {
    "pixelcnn": PixelCNNConfig, "transformer": TransformerConfig, "masked": MaskedConfig,
}
RASTER_ARCHS = ("pixelcnn", "transformer")  # the priors that draw one code per step, in raster order


@dataclass(frozen=True)
class TwoLevelPriorConfig:
    """The prior of a two-level VQ-VAE (``vqgen.models.hierarchy``): a PixelCNN over the top map, and one over
    the bottom map conditioned on the top map, with the same options."""

    top: PixelCNNConfig
    bottom: PixelCNNConfig

    @classmethod
    def for_maps(cls, cfg: PixelCNNConfig, top_shape: tuple[int, int]) -> TwoLevelPriorConfig:
        """Both priors with the options of ``cfg`` (sized to the bottom map), the top one at ``top_shape``."""
        top = dataclasses.replace(cfg, latent_shape=tuple(top_shape))
        bottom = dataclasses.replace(cfg, cond_codes=cfg.num_codes, cond_shape=tuple(top_shape))
        return cls(top, bottom)

    # what the sample stage, the API and evaluate read of a prior's config: the bottom map's
    arch = property(lambda self: self.bottom.arch)
    num_codes = property(lambda self: self.bottom.num_codes)
    latent_shape = property(lambda self: self.bottom.latent_shape)
    num_classes = property(lambda self: self.bottom.num_classes)
    guidance = property(lambda self: self.bottom.guidance)
    guided_temperature = property(lambda self: self.bottom.guided_temperature)

    def validate(self) -> None:
        self.top.validate()
        self.bottom.validate()

    def to_dict(self) -> dict[str, Any]:
        return {"levels": 2, "arch": self.arch, "top": self.top.to_dict(), "bottom": self.bottom.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoLevelPriorConfig:
        return cls(PixelCNNConfig.from_dict(d["top"]), PixelCNNConfig.from_dict(d["bottom"]))


def prior_config_from_dict(d: dict[str, Any]) -> PriorConfig | TwoLevelPriorConfig:
    """A prior's recorded config -> the config of its architecture (files without ``arch``: a PixelCNN), or of
    both priors of a two-level VQ-VAE (``levels`` 2)."""
    if d.get("levels") == 2:
        return TwoLevelPriorConfig.from_dict(d)
    arch = d.get("arch", "pixelcnn")  # written before there was a second architecture
    if arch not in PRIOR_ARCHS:
        raise VQGenError(f"unknown prior architecture {arch!r} (known: {', '.join(PRIOR_ARCHS)}); a newer vqgen wrote it?")
    return PRIOR_ARCHS[arch].from_dict(d)
