"""Stage 2: encode a dataset into code maps and save them, with labels, in one code file
(``vqgen.formats.codes`` describes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.codes import AUDIT_KEYS, code_dtype, save_codes
from vqgen.formats.files import check_output_path, expect_kind, file_sha256, read_metadata
from vqgen.config import ExtractOptions, is_photo, to_dict
from vqgen.data import ImageData, rebuild_data
from vqgen.data.augment import draw_copy_shifts, shift_images
from vqgen.data.batches import make_loader
from vqgen.device import resolve_device
from vqgen.measures import CodeHistogram
from vqgen.logs import progress, say, warn
from vqgen.models.vqvae import MAP_NAMES, level_shapes

LOW_USAGE_WARNING = 0.25


@torch.no_grad()
def encode_split(model, dataset, batch_size: int, device: torch.device, desc: str,
                 augment: ExtractOptions | None = None):
    """Stream a split through the encoder -> (maps, labels (N,), histograms), the maps and their histograms
    keyed by tensor name: ``codes`` (N, h, w) (residual VQ: (N, depth, h, w)), and with two levels
    ``codes_top`` (N, ht, wt).

    With ``augment``, each batch is also encoded ``augment.augment_copies`` times more, shifted (the shift
    of copy c of image i drawn from (seed, c, i)), and with ``augment.flip`` every other copy (the
    first, third, ...) mirrored, in the same pass over the images: the maps are then those of the N
    images followed by those of each copy, (N * (1 + copies), ...), the labels repeat, and the
    histograms count the images' own codes only.
    """
    copies = augment.augment_copies if augment else 0
    shifts = [draw_copy_shifts(len(dataset), augment.augment_shift, augment.augment_seed, c) for c in range(copies)]
    mirrored = [bool(augment.flip) and c % 2 == 0 for c in range(copies)]
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    dtype = code_dtype(model.cfg.num_codes)
    names = MAP_NAMES[model.cfg.levels]
    maps: list[dict[str, list[torch.Tensor]]] = [{name: [] for name in names} for _ in range(1 + copies)]
    # all codebooks' codes (K x depth); two levels have one codebook per map (no residual VQ), so K each
    histograms = {name: CodeHistogram(model.cfg.total_codes) for name in names}
    labels, start = [], 0
    for images, y in progress(loader, len(loader), desc):
        stop = start + len(images)
        versions = [images] + [copy_of(images, shift[start:stop], mirror) for shift, mirror in zip(shifts, mirrored)]
        for copy, (version, batch) in enumerate(zip(maps, versions)):
            encoded = model.encode(batch.to(device))
            for name, indices in zip(names, encoded if isinstance(encoded, tuple) else (encoded,)):
                if copy == 0:
                    histograms[name].add(indices.cpu())
                version[name].append(indices.cpu().to(dtype))
        labels.append(torch.as_tensor(y, dtype=torch.long))
        start = stop
    joined = {name: torch.cat([part for version in maps for part in version[name]]) for name in names}
    return joined, torch.cat(labels).repeat(1 + copies), histograms


def copy_of(images: torch.Tensor, shifts: torch.Tensor, mirror: bool) -> torch.Tensor:
    """One augmented copy of a batch: shifted, then mirrored (left-right) when ``mirror``."""
    shifted = shift_images(images, shifts)
    return shifted.flip(-1) if mirror else shifted


def default_splits(data: ImageData) -> list[str]:
    return ["train", "val"] + (["test"] if data.test is not None else [])


def extract_codes(
    vqvae_path: Path,
    data: ImageData,
    out: Path,
    batch_size: int = 256,
    device: str = "auto",
    splits: Sequence[str] | None = None,
    augment: ExtractOptions | None = None,
) -> dict[str, Any]:
    """Encode ``splits`` of ``data`` (default: train, val, and test where there is one) with the VQ-VAE at
    ``vqvae_path`` into the code file ``out``, and shifted (and, for colour images by default, mirrored)
    copies of the training images as ``augment`` (default ``ExtractOptions()``) asks."""
    augment = augment or ExtractOptions()
    splits = list(splits or default_splits(data))
    datasets = {split: data.pick(split) for split in splits}  # an unknown or missing split fails before encoding
    check_output_path(out)
    dev = resolve_device(device)
    model, vq_meta = load_vqvae(vqvae_path, dev)
    if augment.flip is None:
        augment = replace(augment, flip=is_photo(model.cfg.in_channels, model.cfg.image_size))
    tensors: dict[str, torch.Tensor] = {}
    audits: dict[str, dict[str, dict[str, float]]] = {AUDIT_KEYS[name]: {} for name in MAP_NAMES[model.cfg.levels]}
    for split, dataset in datasets.items():
        copies = f" and {augment.augment_copies} copies" if split == "train" and augment.augment_copies else ""
        maps, labels, histograms = encode_split(model, dataset, batch_size, dev, f"encoding {split}{copies}",
                                                augment if split == "train" else None)
        for name, codes in maps.items():
            tensors[f"{split}_{name}"] = codes
            audits[AUDIT_KEYS[name]][split] = histograms[name].summary()
        tensors[f"{split}_labels"] = labels
    meta = {
        **level_shapes(model.cfg),
        "num_codes": model.cfg.num_codes,
        "code_depth": model.cfg.code_depth,
        "quantizer": model.cfg.quantizer,
        "latent_shape": list(model.cfg.latent_shape),
        "code_dtype": str(code_dtype(model.cfg.num_codes)).removeprefix("torch."),
        "vqvae_path": str(Path(vqvae_path).resolve()),
        "vqvae_sha256": file_sha256(vqvae_path),
        "dataset": data.spec,
        "label_names": data.label_names,
        "image": vq_meta["image"],
        # train_codes holds the images' codes, then those of each copy: (1 + copies) x num_train_images
        "augment": {**to_dict(augment), "num_train_images": len(datasets["train"])} if "train" in datasets else None,
        **audits,
    }
    return save_codes(out, tensors, meta)


def run(vqvae_path: Path, out: Path, data: str | None = None, data_root: str | Path = "data",
                      batch_size: int = 256, device: str = "auto",
                      augment: ExtractOptions | None = None) -> dict[str, Any]:
    """Stage 2, ``vqgen extract-codes``: encode the VQ-VAE's own dataset and split (or ``data``, resized to the
    VQ-VAE's image size and channels), with the shifted copies ``augment`` asks for, and warn when the codebook
    is barely used."""
    augment = augment or ExtractOptions()
    augment.validate()  # before the data is opened
    meta = read_metadata(vqvae_path)
    expect_kind(vqvae_path, meta, "vqvae")
    check_output_path(out)
    images = rebuild_data(meta["dataset"], meta["image"], data, data_root)
    say(images.describe())
    result = extract_codes(vqvae_path, images, out, batch_size=batch_size, device=device, augment=augment)
    for key, which in (("codebook_audit", "the codebook"), ("codebook_audit_top", "the top codebook")):
        usage = result.get(key, {}).get("train", {}).get("usage", 1.0)
        if usage < LOW_USAGE_WARNING:
            warn(f"only {usage:.0%} of {which} is used; the VQ-VAE has collapsed codes "
                 "(try the default EMA + k-means + dead-code restarts)")
    return result
