"""Every option's default, once: the dataclasses behind the command line, the checkpoints and resume files.

A field made with ``option(default, help)`` is a command-line option: ``vqgen.cli.options`` builds its
``--flag`` from the field name (or ``flag=``), and ``--help`` shows the help and this default. A field
without help is set by the program (image size, number of classes, ...), never by a flag. The model
configurations (``VQVAEConfig``, the priors' ``PixelCNNConfig`` and ``TransformerConfig``) live here too,
as do the training, data and loss options.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from vqgen.errors import VQGenError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, short: str | None = None,
           factory: Any = None) -> Any:
    """A dataclass field that is also a command-line option (``help`` empty: not an option)."""
    metadata = {"help": help, "flag": flag, "short": short}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_help(cls: type, name: str) -> dict[str, Any]:
    """The option metadata of ``cls.name``, looked up through the base classes too.

    A subclass that only changes a default (``epochs: int = 12``) keeps its base class's help and flag.
    """
    for klass in cls.__mro__:
        own = klass.__dict__.get("__dataclass_fields__", {})
        if name in own and own[name].metadata.get("help"):
            return dict(own[name].metadata)
    return {}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON (nested configs become nested objects)."""
    return asdict(cfg)


def from_dict(cls: type[T], values: dict[str, Any], legacy: dict[str, Any] | None = None) -> T:
    """Rebuild ``cls`` from ``to_dict`` output: unknown keys are ignored, lists become tuples where the
    field is a tuple, nested configs are rebuilt, and a missing key takes its ``legacy`` value (what a
    file written before the field existed meant) or else the default."""
    known = {f.name: f for f in fields(cls) if f.init}  # not arch: the class sets it
    given = {**(legacy or {}), **{k: v for k, v in values.items() if k in known}}
    for name, value in given.items():
        f = known[name]
        if isinstance(value, list) and str(f.type).startswith("tuple"):
            given[name] = tuple(value)
        elif isinstance(value, dict) and dataclasses.is_dataclass(f.default_factory):
            given[name] = from_dict(f.default_factory, value)
    return cls(**given)


def check(condition: bool, message: str) -> None:
    """Raise the one-line error ``message`` unless ``condition`` holds (option validation)."""
    if not condition:
        raise VQGenError(message)


# ----------------------------------------------------------------------------- models


# what a checkpoint written before a field existed meant by leaving it out. restart_stop: restarts
# went on until the end. Such checkpoints also hold dead_threshold as an absolute count per step
# (1.0 by default); it is read as the new relative value, which changes only the dead-code count a
# loaded model reports, since nothing trains on from a finished checkpoint.
LEGACY_VALUES: dict[str, Any] = {"head_channels": 0, "restart_stop": 1.0, "quantizer": "vq", "rotation_trick": False}
# files from before VQ-VAE-2 and the scaled networks: one level, today's layout
LEGACY_VALUES.update({"levels": 1, "channel_mult": None, "norm": "none", "attention": False})
QUANTIZERS = ("vq", "fsq", "rvq")
NORMS = ("none", "group")


@dataclass
class VQVAEConfig:
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    hidden_channels: int = option(128, "Channels of the encoder/decoder trunk.", flag="--hidden")
    res_channels: int = option(64, "Bottleneck channels of residual blocks.")
    num_res_blocks: int = option(2, "Residual blocks in encoder and decoder.", flag="--res-blocks")
    num_downsamples: int = option(
        2, "Stride-2 stages n; downsampling factor 2^n (2: 28x28 -> 7x7).", flag="--downsamples"
    )
    head_channels: int = option(
        32, "Decoder head: the last upsampling gives this many channels, then a 3x3 conv draws the image (0: none)."
    )
    quantizer: str = option(
        "vq", "vq (nearest code), fsq (finite scalar quantization, --fsq-levels) or rvq (residual VQ: "
        "--rvq-depth codebooks of K codes each)."
    )
    num_codes: int = option(512, "Codebook size K (rvq: per codebook; fsq: set to the product of --fsq-levels).",
                            short="-K")
    code_dim: int = option(64, "Dimension D of the encoder output / codes.", short="-D")
    beta: float = option(0.25, "Weight of the commitment loss.")
    ema: bool = option(True, "EMA codebook updates (else the loss-based codebook update).")
    decay: float = option(0.99, "EMA decay of codebook statistics.")
    kmeans_init: bool = option(True, "Initialise codes by k-means on the first batch.")
    restart_dead: bool = option(True, "Re-seed unused codes from recent encoder outputs.")
    # 0.5: used less than half as often as uniform use would give it. The old absolute 1.0 was 0.65 of
    # the mean at B=16, 7x7, K=512 but 10x the mean at K=8192 (every code re-seeded at every check).
    # Lower values revive codes later (ln(1/t)/(1-decay) steps after they stop): 0.05 and 0.1 lost 1.4
    # and 1.0 dB val PSNR against 0.5 after 3 epochs of the defaults.
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
        if self.codebook_dim == 0:  # the command line's way of saying "codes of dimension D"
            self.codebook_dim = None
        if self.quantizer == "fsq" and self.fsq_shape and min(self.fsq_shape) >= 2:
            self.num_codes = math.prod(self.fsq_shape)

    @property
    def fsq_shape(self) -> tuple[int, ...]:
        """--fsq-levels as integers; () when it is not a comma-separated list of integers."""
        parts = str(self.fsq_levels).replace(" ", "").split(",")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()

    @property
    def code_depth(self) -> int:
        """Codes per latent position: --rvq-depth for rvq, else 1."""
        return self.rvq_depth if self.quantizer == "rvq" else 1

    @property
    def total_codes(self) -> int:
        """Codes of all codebooks together (K x depth): the size of code histograms."""
        return self.num_codes * self.code_depth

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

    def validate_quantizer(self) -> None:
        """The --quantizer options (checked before any data is read)."""
        check(self.quantizer in QUANTIZERS, f"--quantizer must be one of {', '.join(QUANTIZERS)}, not {self.quantizer!r}")
        if self.quantizer == "fsq":
            check(bool(self.fsq_shape) and min(self.fsq_shape) >= 2,
                  f"--fsq-levels must be comma-separated integers of at least 2 (e.g. 8,6,5), not {self.fsq_levels!r}")
            check(self.num_codes == math.prod(self.fsq_shape),
                  f"fsq: K is the product of --fsq-levels {self.fsq_levels} ({math.prod(self.fsq_shape)}), not {self.num_codes}")
            check(not self.rotation_trick, "--rotation-trick needs a codebook (vq or rvq); fsq rounds instead")
            check(self.fsq_tail >= 0, f"--fsq-tail must be 0 or more, not {self.fsq_tail}")
        check(self.rvq_depth >= 2, f"--rvq-depth must be at least 2 (depth 1 is --quantizer vq), not {self.rvq_depth}")
        check(self.quantizer != "rvq" or self.levels == 1,
              "--quantizer rvq takes --levels 1 (two-level residual VQ stacks are not supported); use vq or fsq")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQVAEConfig:
        return from_dict(cls, d, LEGACY_VALUES)


DEFAULT_LABEL_DROPOUT = 0.1  # enough "no class" rows to learn the unconditional mode; costs little conditional NLL


@dataclass
class PriorConfig:
    """What every prior over code maps records: the maps it models, its classes, label dropout.

    Each architecture subclasses it; ``arch`` (set by the subclass, never by hand) names it in checkpoints.
    """

    arch: str = dataclasses.field(default="", init=False)
    num_codes: int = 512
    latent_shape: tuple[int, int] = (7, 7)
    num_classes: int = 0  # 0: unconditional
    code_depth: int = 1  # codes per latent position (residual VQ): interleaved along each row
    label_dropout: float | None = option(
        None, "Classifier-free guidance: train with the label replaced by a learned 'no class' row this often, "
        "so that `sample --guidance S` works; default: 0.1 for a class-conditional prior, else 0."
    )

    def with_label_dropout_for(self, conditional: bool):
        """This config with the default label dropout settled: 0.1 when conditional, 0 otherwise."""
        if self.label_dropout is not None:
            return self
        return dataclasses.replace(self, label_dropout=DEFAULT_LABEL_DROPOUT if conditional else 0.0)

    def validate(self) -> None:
        # every architecture has num_layers and channels (with its own defaults and help)
        if self.num_layers < 1 or self.channels < 1:
            raise VQGenError("--layers and --channels must be positive")
        if self.label_dropout is not None and not 0 <= self.label_dropout < 1:
            raise VQGenError(f"--label-dropout must be in [0, 1), not {self.label_dropout}")
        if self.label_dropout and not self.num_classes:
            raise VQGenError("--label-dropout needs a class-conditional prior, but this one is unconditional")
        check(self.code_depth >= 1 and self.latent_shape[1] % self.code_depth == 0,
              f"a prior over {self.code_depth} codes per position needs a map width divisible by it, "
              f"not {self.latent_shape[1]}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return from_dict(cls, d, {"label_dropout": 0.0})  # files from before label dropout: none


@dataclass
class PixelCNNConfig(PriorConfig):
    arch: str = dataclasses.field(default="pixelcnn", init=False)
    channels: int = option(64, "Channels of the vertical/horizontal stacks.")
    num_layers: int = option(15, "Gated layers.", flag="--layers")
    kernel_size: int = option(3, "Odd kernel size k of the stacks.")
    head_channels: int = 256
    dropout: float = option(0.1, "Dropout on the gated horizontal features (0.1: 0.06 bits/code better on "
                                 "mnist5k codes, where 4,500 maps are little data).")
    # the bottom prior of a two-level model: conditioned on the top code map (cond_codes codes of cond_shape)
    cond_codes: int = 0  # 0: no conditioning map
    cond_shape: tuple[int, int] = (0, 0)

    def validate(self) -> None:
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise VQGenError(f"--kernel-size must be odd and >= 3, not {self.kernel_size}")
        super().validate()
        if self.cond_codes:
            (h, w), (ch, cw) = self.latent_shape, self.cond_shape
            check(ch > 0 and cw > 0 and h % ch == 0 and w % cw == 0 and h // ch == w // cw,
                  f"the conditioning map {ch}x{cw} does not scale evenly to the code map {h}x{w}")


@dataclass
class TransformerConfig(PriorConfig):
    arch: str = dataclasses.field(default="transformer", init=False)
    channels: int = option(128, "Width: channels of the embeddings, attention and residual stream.")
    num_layers: int = option(8, "Transformer blocks.", flag="--layers")
    num_heads: int = option(4, "Attention heads (must divide --channels).", flag="--heads")
    mlp_ratio: int = 4  # hidden width of the MLP, in multiples of the channels
    dropout: float = option(0.0, "Dropout on the input embeddings, attention weights and residual branches.")

    def validate(self) -> None:
        super().validate()
        if self.num_heads < 1 or self.channels % self.num_heads:
            raise VQGenError(f"--heads must divide --channels {self.channels}, not be {self.num_heads}")
        check(self.code_depth == 1, f"--arch transformer models one code per position, not residual VQ stacks of "
                                    f"{self.code_depth}; use --arch pixelcnn")
        if not 0 <= self.dropout < 1:
            raise VQGenError(f"--dropout must be in [0, 1), not {self.dropout}")


DEFAULT_PRIOR_ARCH = "pixelcnn"
PRIOR_ARCHS: dict[str, type[PriorConfig]] = {"pixelcnn": PixelCNNConfig, "transformer": TransformerConfig}


@dataclass
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


# ----------------------------------------------------------------------------- data


@dataclass
class DataOptions:
    """Which images, at what size, and how they are split (``vqgen.data.load_image_data``)."""

    data: str = option("mnist5k", "mnist5k (shipped), mnist, fashion-mnist, cifar10, or a folder of images.")
    root: str = option("data", "Where torchvision datasets are downloaded.", flag="--data-root")
    image_size: int | None = option(None, "Resize (shorter side) and centre-crop to this size.")
    channels: int | None = option(None, "Force 1 (grey) or 3 (RGB); default: detect.")
    val_fraction: float = option(0.1, "Share of images held out for validation.")
    split_seed: int = option(0, "Seed of the train/validation split (kept apart from --seed, so seed sweeps share one split).")
    skip_bad_images: bool = option(False, "Skip unreadable image files (with a warning) instead of failing.",
                                   flag="--skip-bad-images")


# ----------------------------------------------------------------------------- training (every trainer)


@dataclass
class TrainOptions:
    """What every training run has: the schedule, seeding, device and precision, saving."""

    epochs: int = option(100, "Passes over the training split.")
    batch_size: int = option(16, "Batch size per process (global = this x processes).")
    lr: float = option(2e-3, "Peak learning rate (warm-up, then cosine decay).")
    warmup_steps: int = 100
    seed: int = option(0, "Seed for initialisation and data order (CPU runs repeat exactly).")
    device: str = option("auto", "auto, cpu or cuda.")
    amp: str = option(
        "auto", "Mixed precision: auto (bf16 where the GPU or CPU does it natively, else float32), off, bf16, "
        "or fp16 (CUDA only)."
    )
    compile: bool = option(False, "torch.compile the model.")
    num_workers: int = option(0, "DataLoader worker processes.", flag="--workers")
    save_every: int = option(
        1, "Epochs between resumable training states (OUT.resume.safetensors); also saved after the last epoch "
        "and on Ctrl-C/SIGTERM."
    )

    def validate(self) -> None:
        check(self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}")
        check(self.lr > 0, f"--lr must be positive, not {self.lr}")
        check(self.save_every >= 1, f"--save-every must be at least 1, not {self.save_every}")
        check(self.num_workers >= 0, f"--workers must be 0 or more, not {self.num_workers}")
        check(self.amp in ("auto", "off", "bf16", "fp16"), f"--amp must be auto, off, bf16 or fp16, not {self.amp!r}")


@dataclass
class GanOptions:
    """Loss options of ``train-vqvae`` beyond the VQ-VAE's own; recorded as train_options["gan"]."""

    gan: bool = option(False, "VQGAN-style training: add a PatchGAN discriminator (hinge loss, adaptive weight).")
    gan_start: int = option(500, "Steps of plain reconstruction training before the discriminator joins.")
    gan_weight: float = option(0.1, "Factor on the adaptive weight of the adversarial loss.")
    disc_layers: int | None = option(
        None, "Stride-2 layers of the discriminator (patch size grows with it); default: as many as the image size "
        "allows, at most 3."
    )
    disc_channels: int = option(64, "Channels of the first discriminator layer.")
    recon_loss: str = option(
        "psnr", "Pixel reconstruction loss: psnr (mean per-image log-MSE, i.e. the mean PSNR), mse, l1 or l1+mse."
    )
    perceptual_weights: str | None = option(
        None, "torchvision VGG16 weights file (.pth or .safetensors): adds an LPIPS-style perceptual loss."
    )
    perceptual_weight: float = option(1.0, "Weight of the perceptual loss (needs --perceptual-weights).")
    max_adaptive_weight: float = 1e4  # VQGAN's clamp

    def validate(self) -> None:
        from pathlib import Path

        from vqgen.losses import RECON_LOSSES

        check(self.recon_loss in RECON_LOSSES,
              f"--recon-loss must be one of {', '.join(RECON_LOSSES)}, not {self.recon_loss!r}")
        check(self.gan_start >= 0, f"--gan-start must be 0 or more steps, not {self.gan_start}")
        check(self.gan_weight >= 0, f"--gan-weight must be 0 or more, not {self.gan_weight}")
        check(self.perceptual_weight >= 0, f"--perceptual-weight must be 0 or more, not {self.perceptual_weight}")
        check(self.perceptual_weights is not None or self.perceptual_weight == 1.0,
              "--perceptual-weight needs --perceptual-weights PATH (torchvision's VGG16 weights file); "
              "vqgen downloads no pretrained networks")
        check(self.perceptual_weights is None or Path(self.perceptual_weights).is_file(),
              f"{self.perceptual_weights}: --perceptual-weights file not found (give torchvision's VGG16 weights file)")
        if self.gan and self.disc_layers is not None:
            self.disc_config(3).validate()

    def for_image(self, image_size: tuple[int, int]) -> GanOptions:
        """These options with ``disc_layers`` chosen for ``image_size`` when it was left open: the most stride-2
        layers (up to 3, VQGAN's) that still leave the last two 4x4 convs a 4x4 map."""
        if self.disc_layers is not None:
            return self
        fits = max(1, int(math.log2(max(1, min(image_size)) / 4))) if min(image_size) >= 8 else 1
        return dataclasses.replace(self, disc_layers=min(3, fits))

    def disc_config(self, in_channels: int):
        from vqgen.models.discriminator import DiscriminatorConfig

        return DiscriminatorConfig(in_channels=in_channels, channels=self.disc_channels, layers=self.disc_layers)


@dataclass
class VQVAETrainOptions(TrainOptions):
    # the default recipe is the fast one (README command 1 in minutes on a laptop CPU); --preset best is the long one
    epochs: int = 40
    batch_size: int = 64
    lr: float = 4e-3
    augment_shift: int = option(2, "Shift training images by up to this many whole pixels, at random each epoch (0: off).")
    gan: GanOptions = option(factory=GanOptions)  # loss options: --recon-loss, perceptual, --gan

    def validate(self) -> None:
        super().validate()
        self.gan.validate()  # --augment-shift is checked where the loader is made


@dataclass
class PriorTrainOptions(TrainOptions):
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3


@dataclass
class ClassifierTrainOptions(TrainOptions):
    epochs: int = 8
    batch_size: int = 128
    min_steps: int = option(200, "Train at least this many steps (more epochs on small datasets).")
    width: int = option(16, "Channels of the first conv layer (then 2x, 4x).")

    def validate(self) -> None:
        super().validate()
        check(self.min_steps >= 0, f"--min-steps must not be negative, not {self.min_steps}")
        check(self.width >= 1, f"--width must be positive, not {self.width}")


# --preset NAME of train-vqvae: values for the options not given on the command line
VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"epochs": 40, "batch_size": 64, "lr": 4e-3},  # the defaults
    "best": {"epochs": 100, "batch_size": 16, "lr": 2e-3},  # the last dB, at about 5x the time
}


# ----------------------------------------------------------------------------- evaluation

SPLITS = ("train", "val", "test", "all")
SPLIT_HELP = ("train, val, test (mnist/fashion-mnist/cifar10: the official test split) or all (every image, "
              "unsplit; e.g. a folder kept for testing).")


@dataclass
class EvaluateRequest:
    """Every option of `vqgen evaluate`, with its default."""

    vqvae: Path | None = option(None, "VQ-VAE checkpoint (or mnist5k, shipped): reconstruction MSE/PSNR/SSIM, "
                                "codebook use, FD/KID.")
    codes: Path | None = option(None, "Code file: held-out codes for the prior, and its codebook audit.")
    prior: Path | None = option(None, "Prior checkpoint (or mnist5k, shipped): NLL, bits per code and dimension, "
                                "vs the code histogram.")
    samples: Path | None = option(None, "Folder written by `vqgen sample`: FD/KID, precision/recall vs real images, "
                                  "class scores.")
    data: str | None = option(None, "Dataset of the real images; default: the one the given files record.")
    data_root: Path = option(Path("data"), "Where torchvision datasets are downloaded.")
    split: str = option("val", SPLIT_HELP)
    classifier: Path | None = option(None, "Reference classifier; default: the cached "
                                     "classifier-<data>-<C>x<H>x<W>.safetensors beside the checkpoints.")
    train_classifier: bool = option(False, "Train the reference classifier when none fits, and cache it; default: "
                                    "fail, saying how to train it.", flag="--train-classifier")
    inception_weights: Path | None = option(None, "torchvision inception_v3 state dict (.safetensors) for the "
                                            "standard FID; default: none (not computed).")
    json_out: Path | None = option(None, "Also write the results as JSON here; default: table only.", flag="--json")
    batch_size: int = option(256, "Batch size.")
    device: str = option("auto", "auto, cpu or cuda.")
    seed: int = option(0, "Seed of the real subsets and KID subsets.")
    kid_subsets: int = option(100, "Random subsets KID is averaged over.")
    kid_subset_size: int = 1000

    def validate(self) -> None:
        check(any((self.vqvae, self.codes, self.prior, self.samples)),
              "nothing to evaluate: give at least one of --vqvae, --codes, --prior, --samples")
        check(self.split in SPLITS, f"--split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        check(self.batch_size >= 1, f"--batch-size must be positive, not {self.batch_size}")
        check(self.kid_subsets >= 1, f"--kid-subsets must be positive, not {self.kid_subsets}")
        check(self.samples is None or self.samples.is_dir(), f"{self.samples}: no such folder of samples")


# ----------------------------------------------------------------------------- sampling


GUIDED_SCALE = 2.0  # the default guidance for priors trained with label dropout: bench/samples.py's best row


@dataclass
class SampleOptions:
    """How `vqgen sample` (and ``vqgen.sample_codes``) draws; the defaults are the best row of bench/samples.py."""

    n: int = option(64, "Number of images (--label all: spread over the classes).")
    label: str | None = option(None, "Class index or name, a comma list, or 'all' (one row per class; the default).")
    temperature: float = option(1.0, "Softmax temperature (> 0).")
    top_k: int | None = option(None, "Sample only among the k most likely codes.")
    guidance: float | None = option(
        None, f"Classifier-free guidance scale S >= 0 (1: none; needs a prior trained with --label-dropout); "
        f"default: {GUIDED_SCALE:g} for such a prior, else 1."
    )
    sampler: str = option("cached", "cached (fast) or full (recompute the whole map per code).")
    batch_size: int = option(64, "Batch size.")
    seed: int = option(0, "Seed (CPU runs repeat exactly).")
    device: str = option("auto", "auto, cpu or cuda.")
    allow_vqvae_mismatch: bool = option(
        False, "Decode even if the VQ-VAE is not the one the prior was fit to.", flag="--allow-vqvae-mismatch"
    )

    def validate(self) -> None:
        check(self.n >= 1, f"--n must be at least 1, not {self.n}")
        check(self.temperature > 0, f"--temperature must be positive, not {self.temperature}")
        check(self.batch_size >= 1, f"--batch-size must be positive, not {self.batch_size}")
        check(self.guidance is None or self.guidance >= 0, f"--guidance must be >= 0, not {self.guidance}")
