"""Stage 3, `vqgen train-prior`: read the code file, size the prior to its maps and labels, train
(``vqgen.train.prior``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vqgen.config import PriorConfig, PriorTrainOptions, TwoLevelPriorConfig, copies_kind, is_photo
from vqgen.errors import VQGenError
from vqgen.formats.codes import CodeFile, load_codes
from vqgen.formats.files import check_output_path
from vqgen.logs import say
from vqgen.train.prior import train_prior


def run(codes_path: Path, prior_config: PriorConfig, train_options: PriorTrainOptions, out: Path,
        conditional: bool | None = None, resume: str | None = None) -> dict[str, Any]:
    """Train a prior on the code file at ``codes_path``; returns the last epoch's metrics.

    ``conditional`` None: class-conditional exactly when the codes have labels.
    """
    train_options.validate()
    codes = load_codes(codes_path)
    check_output_path(out)
    if conditional is None:
        conditional = codes.labelled
    elif conditional and not codes.labelled:
        raise VQGenError(f"{codes_path}: --conditional needs labelled codes, but these have no labels")
    cfg = replace(prior_config, num_codes=codes.meta["num_codes"], latent_shape=codes.prior_latent_shape,
                  code_depth=codes.depth, num_classes=len(codes.meta["label_names"]) if conditional else 0)
    image = codes.meta.get("image", {})
    channels = image.get("channels", 1)
    one_level_photos = is_photo(channels, image.get("size", (0, 0))) and codes.levels == 1
    cfg = cfg.with_label_dropout_for(conditional).with_guidance_for(channels).with_width_for(one_level_photos)
    cfg.validate()
    describe(codes, cfg, conditional)
    if codes.levels == 2:
        if cfg.arch != "pixelcnn":
            raise VQGenError(f"{codes_path}: the codes of a two-level VQ-VAE take --arch pixelcnn priors (its bottom "
                             f"prior is conditioned on the top map), not --arch {cfg.arch}")
        cfg = TwoLevelPriorConfig.for_maps(cfg, codes.meta["latent_shape_top"])
    return train_prior(codes, cfg, train_options, Path(out), resume)


def describe(codes: CodeFile, cfg: PriorConfig, conditional: bool) -> None:
    kind = f"conditional on {cfg.num_classes} classes" if conditional else "unconditional"
    levels = ", top and bottom priors" if codes.levels == 2 else ""
    images = len(codes.train) // codes.variants
    made = copies_kind(codes.meta.get("augment"))
    copies = f" (each of {images} images and {codes.variants - 1} {made} copies)" if codes.variants > 1 else ""
    say(f"prior: {len(codes.train)} train{copies} / {len(codes.val)} val code maps, {kind}{levels}")
