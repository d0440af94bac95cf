"""The options of the stages: data, training (every trainer, the GAN), evaluation and sampling."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqgen.config import (
    COPIES, DATA, DEVICE, FEATURES, GAN, INPUTS, METRICS, MODEL, OUTPUT, SAMPLING, TRAINING, check, is_photo,
    option,
)
from vqgen.config.models import DiscriminatorConfig
from vqgen.config.priors import (
    GUIDED_SCALE_GREY, GUIDED_TEMPERATURE_COLOUR, GUIDED_TEMPERATURE_GREY, RESIDUAL_TEMPERATURE,
)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataOptions:
    """Which images, at what size, and how they are split (``vqgen.data.load_image_data``)."""

    help_panel = DATA

    data: str = option("mnist5k", "mnist5k (shipped), mnist, fashion-mnist, cifar10, or a folder of images.")
    root: str = option("data", "Where torchvision datasets are downloaded.", flag="--data-root")
    image_size: int | None = option(None, "Resize (shorter side) and centre-crop to this size.")
    channels: int | None = option(None, "Force 1 (grey) or 3 (RGB); default: detect.")
    val_fraction: float = option(0.1, "Share of images held out for validation.")
    split_seed: int = option(0, "Seed of the train/validation split (kept apart from --seed, so seed sweeps share one split).")
    skip_bad_images: bool = option(False, "Skip unreadable image files (with a warning) instead of failing.",
                                   flag="--skip-bad-images")


# ----------------------------------------------------------------------------- training (every trainer)


RECON_LOSSES = ("mse", "l1", "l1+mse", "psnr")  # --recon-loss (vqgen.losses.reconstruction_loss)
WARMUP_HELP = "Steps of linear LR warm-up from 0 to --lr."
SHIFT_HELP = "Shift training images by up to this many whole pixels, at random each epoch (0: off)."
FLIP_HELP = ("Mirror (left-right) half the training images, at random each epoch; default: on for colour images "
             "of 16 px or more (photos), off for grey ones (a mirrored digit is another shape).")


@dataclass(frozen=True)
class TrainOptions:
    """What every training run has: the schedule, seeding, device and precision, saving."""

    help_panel = TRAINING
    field_panels = {"device": DEVICE, "amp": DEVICE, "compile": DEVICE, "num_workers": DEVICE}

    epochs: int = option(100, "Passes over the training split.")
    batch_size: int = option(16, "Batch size per process (global = this x processes).")
    lr: float = option(2e-3, "Peak learning rate (warm-up, then cosine decay).")
    warmup_steps: int = option(100, WARMUP_HELP)
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
        check(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}")
        check(self.lr > 0, f"--lr must be positive, not {self.lr}")
        check(self.warmup_steps >= 0, f"--warmup-steps must not be negative, not {self.warmup_steps}")
        check(self.save_every >= 1, f"--save-every must be at least 1, not {self.save_every}")
        check(self.num_workers >= 0, f"--workers must be 0 or more, not {self.num_workers}")
        check(self.amp in ("auto", "off", "bf16", "fp16"), f"--amp must be auto, off, bf16 or fp16, not {self.amp!r}")


@dataclass(frozen=True)
class GanOptions:
    """Loss options of ``train-vqvae`` beyond the VQ-VAE's own; recorded as train_options["gan"]."""

    help_panel = GAN

    gan: bool | None = option(None, "VQGAN-style training: add a PatchGAN discriminator (hinge loss, adaptive "
                                    "weight); default: on for colour images of 16 px or more (photos), off for grey "
                                    "ones.")
    gan_start: int = option(500, "Steps of plain reconstruction training before the discriminator joins.")
    # on photos 0.5 keeps the adversarial term felt (docs/benchmarks.md#colour-photos)
    gan_weight: float = option(0.5, "Factor on the adaptive weight of the adversarial loss.")
    disc_layers: int | None = option(
        None, "Stride-2 layers of the discriminator (patch size grows with it); default: as many as the image size "
        "allows, at most 3."
    )
    # 32 halves the discriminator's cost a step and sampled better photos over two seeds than 64
    # (docs/benchmarks.md#against-the-issues-targets-and-what-it-would-take)
    disc_channels: int = option(32, "Channels of the first discriminator layer.")
    # every other step sampled photos as well as every step over two seeds, a GAN epoch about 2 s shorter in
    # float32 (docs/benchmarks.md#the-second-round-the-time-target); every third step sampled worse
    disc_every: int = option(2, "Update the discriminator every this many steps from --gan-start on (the "
                                "generator's adversarial loss is taken every step).")
    recon_loss: str = option(
        "psnr", "Pixel reconstruction loss: psnr (mean per-image log-MSE, i.e. the mean PSNR), mse, l1 or l1+mse."
    )
    perceptual_weights: str | None = option(
        None, "torchvision VGG16 weights file (.pth or .safetensors): adds an LPIPS-style perceptual loss."
    )
    perceptual_weight: float = option(1.0, "Weight of the perceptual loss (needs --perceptual-weights).")
    max_adaptive_weight: float = 1e4  # VQGAN's clamp

    def validate(self) -> None:
        check(self.recon_loss in RECON_LOSSES,
              f"--recon-loss must be one of {', '.join(RECON_LOSSES)}, not {self.recon_loss!r}")
        check(self.gan_start >= 0, f"--gan-start must be 0 or more steps, not {self.gan_start}")
        check(self.disc_every >= 1, f"--disc-every must be 1 or more steps, not {self.disc_every}")
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

    def disc_config(self, in_channels: int) -> DiscriminatorConfig:
        return DiscriminatorConfig(in_channels=in_channels, channels=self.disc_channels, layers=self.disc_layers)


VQVAE_EPOCHS = 26
# two epochs fewer keep the photos' residual VQ within the one-codebook recipe's float32 time, its decoder still past
# 25 dB (docs/benchmarks.md#two-codebooks-of-512-the-photo-default)
VQVAE_EPOCHS_RVQ_PHOTOS = 24


@dataclass(frozen=True)
class VQVAETrainOptions(TrainOptions):
    # the fast recipe (README command 1 in minutes on any CPU); --preset best is the long one. Why these values:
    # docs/benchmarks.md#speed-of-the-default-recipe
    epochs: int | None = option(
        None, f"Passes over the training split; default: {VQVAE_EPOCHS}, or {VQVAE_EPOCHS_RVQ_PHOTOS} for the "
        "residual VQ of photos (colour images of 16 px or more).")
    batch_size: int = 32
    lr: float = 4e-3
    # a long warm-up keeps lr 4e-3 from collapsing the decoder (docs/benchmarks.md#vq-vae-warm-up-and-learning-rate)
    warmup_steps: int = option(500, WARMUP_HELP)
    augment_shift: int = option(2, SHIFT_HELP)
    flip: bool | None = option(None, FLIP_HELP)
    gan: GanOptions = option(factory=GanOptions)  # loss options: --recon-loss, perceptual, --gan

    def validate(self) -> None:
        super().validate()
        self.gan.validate()  # --augment-shift is checked where the loader is made

    def settled_for(self, channels: int, image_size: tuple[int, int], quantizer: str = "vq") -> VQVAETrainOptions:
        """These options with those left open settled by image kind: photos (colour, 16 px or more) get mirror
        images and the discriminator, whose sharper decoder their samples need
        (docs/benchmarks.md#colour-photos); grey images (digits, text) get neither. The epochs: two fewer for
        photos with residual VQ (``quantizer``, as the model is built)."""
        photos = is_photo(channels, image_size)
        gan = self.gan if self.gan.gan is not None else dataclasses.replace(self.gan, gan=photos)
        epochs = self.epochs or (VQVAE_EPOCHS_RVQ_PHOTOS if photos and quantizer == "rvq" else VQVAE_EPOCHS)
        return dataclasses.replace(self, flip=photos if self.flip is None else self.flip, gan=gan, epochs=epochs)


# hot and short: the best prior a few CPU minutes buy (docs/benchmarks.md#the-priors-schedule-ema-and-attention);
# a masked prior learns from its hidden codes only and needs more passes: 21 at its default width train in the
# PixelCNN's time (docs/benchmarks.md#masked-prior-and-parallel-decoding)
PRIOR_EPOCHS = {"pixelcnn": 12, "transformer": 12, "masked": 21}


@dataclass(frozen=True)
class PriorTrainOptions(TrainOptions):
    epochs: int | None = option(None, "Passes over the training codes; default: 12, or 21 for --arch masked.")
    batch_size: int = 64
    lr: float = 4e-3
    ema_decay: float = option(0.0, "Validate and save an exponential moving average of the weights with this "
                              "decay per step (e.g. 0.995); 0: the weights themselves.")

    def validate(self) -> None:
        super().validate()
        check(0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), not {self.ema_decay}")

    def settled_for(self, arch: str) -> PriorTrainOptions:
        """These options with the epochs, when left open, chosen for the prior's ``arch``."""
        return self if self.epochs is not None else dataclasses.replace(self, epochs=PRIOR_EPOCHS[arch])


@dataclass(frozen=True)
class ClassifierTrainOptions(TrainOptions):
    field_panels = {**TrainOptions.field_panels, "width": MODEL}
    # accurate enough that its errors hardly count as wrong-class samples (docs/benchmarks.md#the-reference-classifier)
    epochs: int = 16
    batch_size: int = 128
    # the same default as every trainer's; only the help differs: the cap is applied by train_classifier
    warmup_steps: int = option(TrainOptions.warmup_steps, WARMUP_HELP + " Capped at a tenth of all steps, so "
                                                         "that short runs on small datasets still decay.")
    min_steps: int = option(200, "Train at least this many steps (more epochs on small datasets).")
    width: int = option(32, "Channels of the first conv layer (then 2x, 4x).")
    augment_shift: int = option(2, SHIFT_HELP)

    def validate(self) -> None:
        super().validate()
        check(self.min_steps >= 0, f"--min-steps must not be negative, not {self.min_steps}")
        check(self.width >= 1, f"--width must be positive, not {self.width}")


# --preset NAME of train-vqvae: values for the options not given on the command line
VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"batch_size": 32, "lr": 4e-3},  # the defaults (their epochs follow the images)
    "best": {"epochs": 100, "batch_size": 16, "lr": 2e-3},  # the last dB, at about 5x the time
}


# ----------------------------------------------------------------------------- code extraction


@dataclass(frozen=True)
class ExtractOptions:
    """What `extract-codes` encodes beside the images themselves: shifted copies of the training images.

    A prior trained on the codes of 4,500 digits learns them by heart within a few epochs; the codes of
    the same digits moved by a pixel are new maps (about 6 codes in 7 change on mnist5k), so
    `train-prior`, which reads one encoding of each training image per epoch, drawn at random, sees
    fresh maps every epoch. Validation codes are never shifted.
    """

    help_panel = COPIES

    # copies give the prior new maps every epoch (docs/benchmarks.md#shifted-copies-of-the-training-codes)
    augment_copies: int = option(3, "Also encode this many copies of every training image, each shifted at random "
                                    "(0: off); train-prior reads one encoding of each image per epoch.")
    augment_shift: int = option(1, "Shift of the copies: up to this many whole pixels in each direction.")
    flip: bool | None = option(None, "Make every other copy a mirror image (left-right); default: on for colour "
                                     "images of 16 px or more (photos), off for grey ones (a mirrored digit is "
                                     "another shape).")
    augment_seed: int = option(0, "Seed of the copies' shifts.")

    def validate(self) -> None:
        check(self.augment_copies >= 0, f"--augment-copies must be 0 or more, not {self.augment_copies}")
        check(self.augment_shift >= 1, f"--augment-shift must be at least 1 pixel, not {self.augment_shift}")


def copies_kind(augment: dict[str, Any] | None) -> str:
    """How a code file's copies were made, for messages: from its recorded ``ExtractOptions``."""
    return "shifted and mirrored" if (augment or {}).get("flip") else "shifted"


# ----------------------------------------------------------------------------- evaluation

SPLITS = ("train", "val", "test", "all")
SPLIT_HELP = ("train, val, test (mnist/fashion-mnist/cifar10: the official test split) or all (every image, "
              "unsplit; e.g. a folder kept for testing).")


@dataclass(frozen=True)
class EvaluateRequest:
    """Every option of `vqgen evaluate`, with its default."""

    help_panel = INPUTS
    field_panels = {"data": DATA, "data_root": DATA, "split": DATA, "classifier": FEATURES, "train_classifier": FEATURES,
                    "inception_weights": FEATURES, "json_out": OUTPUT, "batch_size": DEVICE, "device": DEVICE,
                    "seed": METRICS, "kid_subsets": METRICS}

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
    inception_weights: Path | None = option(None, "torchvision inception_v3 state dict (.safetensors): Fréchet "
                                            "distance and KID in its features (bilinear resize to 299x299). Not the "
                                            "reference FID network: not comparable with published FIDs. Default: "
                                            "none (not computed).")
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


# the guidance of a prior trained with label dropout that records none (files from before it was recorded)
GUIDED_SCALE = GUIDED_SCALE_GREY
# the temperature of guided sampling with a prior that records none (files from before it was recorded)
GUIDED_TEMPERATURE = GUIDED_TEMPERATURE_GREY
# a masked prior's parallel decoding: steps from bench/masked.py (docs/benchmarks.md#masked-prior-and-parallel-decoding),
# the choice temperature the paper's
MASKED_STEPS = 8
CHOICE_TEMPERATURE = 4.5


@dataclass(frozen=True)
class SampleOptions:
    """How `vqgen sample` (and ``vqgen.sample_codes``) draws; the defaults are the best row of bench/samples.py."""

    help_panel = SAMPLING
    field_panels = {"batch_size": DEVICE, "device": DEVICE, "allow_vqvae_mismatch": MODEL}

    n: int = option(64, "Number of images (--label all: spread over the classes).")
    label: str | None = option(None, "Class index or name, a comma list, or 'all' (one row per class; the default).")
    temperature: float | None = option(
        None, f"Softmax temperature (> 0); default: with guidance the one the prior records "
              f"({GUIDED_TEMPERATURE_GREY:g} for digits, {GUIDED_TEMPERATURE_COLOUR:g} for photos), else 1."
    )
    residual_temperature: float | None = option(
        None, "Priors over the codes of a residual VQ-VAE (--quantizer rvq): the temperature of each position's finer "
        f"codes (depth 2 on); default: the one the prior records ({RESIDUAL_TEMPERATURE:g}).")
    top_k: int | None = option(None, "Sample only among the k most likely codes.")
    guidance: float | None = option(
        None, "Classifier-free guidance scale S >= 0 (1: none; needs a prior trained with --label-dropout); "
        "default: the scale the prior records (train-prior --sample-guidance: by image kind)."
    )
    sampler: str = option("cached", "Raster-order priors: cached (fast) or full (recompute the whole map per code).")
    steps: int | None = option(None, "Masked priors: parallel decoding steps (each draws every hidden code and keeps "
                               f"the most confident by a cosine schedule); default: {MASKED_STEPS}.")
    choice_temperature: float | None = option(
        None, "Masked priors: Gumbel noise on the confidence that picks which codes a step keeps, annealed to 0 over "
        f"the steps (0: by confidence alone); default: {CHOICE_TEMPERATURE:g}.")
    batch_size: int = option(64, "Batch size.")
    seed: int = option(0, "Seed (CPU runs repeat exactly).")
    device: str = option("auto", "auto, cpu or cuda.")
    allow_vqvae_mismatch: bool = option(
        False, "Decode even if the VQ-VAE is not the one the prior was fit to.", flag="--allow-vqvae-mismatch"
    )

    def validate(self) -> None:
        check(self.n >= 1, f"--n must be at least 1, not {self.n}")
        check(self.temperature is None or self.temperature > 0,
              f"--temperature must be positive, not {self.temperature}")
        check(self.residual_temperature is None or self.residual_temperature > 0,
              f"--residual-temperature must be positive, not {self.residual_temperature}")
        check(self.batch_size >= 1, f"--batch-size must be positive, not {self.batch_size}")
        check(self.guidance is None or self.guidance >= 0, f"--guidance must be >= 0, not {self.guidance}")
        check(self.steps is None or self.steps >= 1, f"--steps must be at least 1, not {self.steps}")
        check(self.choice_temperature is None or self.choice_temperature >= 0,
              f"--choice-temperature must be 0 or more, not {self.choice_temperature}")
