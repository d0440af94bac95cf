"""Stage 2: encode a dataset into code maps and save them, with labels, in one safetensors file.

Code file layout (readable with safetensors alone):

* tensors ``<split>_codes``: (N, h, w) int16 (int32 when K > 32767), for residual VQ stacks
  (N, depth, h, w) of codes 0..K-1 per codebook, and ``<split>_labels``: (N,) int64, -1 where
  unlabelled, for the splits ``train`` and ``val`` (what train-prior reads), plus ``test`` where the
  data has an official test split, or the splits asked for (e.g. ``all``); ``train_codes`` holds the
  codes of the training images, then those of each of ``augment.augment_copies`` shifted copies of
  them (``vqgen.config.ExtractOptions``), in the same order, and ``train_labels`` repeats their labels;
* two-level VQ-VAEs (VQ-VAE-2) add ``<split>_codes_top``: (N, ht, wt), the top map; then
  ``<split>_codes`` is the bottom map (N, hb, wb), at twice the top's size;
* metadata key ``vqgen``: JSON with ``kind: "codes"``, ``levels`` (1 or 2; files without it: 1),
  ``num_codes`` (per codebook), ``code_depth`` (codes per position: 1, or the residual VQ's depth),
  ``quantizer``, ``latent_shape`` (the bottom map's), ``latent_shape_top`` (two levels),
  ``vqvae_sha256``, ``vqvae_path``, ``dataset``, ``label_names``, ``image``, and per split a count
  ``num_<split>`` (for train: every map, copies included), ``augment`` (the options and
  ``num_train_images``; files without it: no copies) and a codebook audit of the images themselves
  (``usage``, ``perplexity``, ``top10_share``, ``dead_codes``) in ``codebook_audit`` (of the top map:
  ``codebook_audit_top``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqgen import __version__
from vqgen.checkpoint import check_output_path, expect_kind, file_sha256, load_vqvae, read_metadata, save_vqgen_file
from vqgen.config import ExtractOptions, to_dict
from vqgen.data import ImageData, image_data_from_spec
from vqgen.data.augment import draw_copy_shifts, shift_images
from vqgen.data.batches import make_loader
from vqgen.device import resolve_device
from vqgen.eval.metrics import CodeHistogram
from vqgen.logs import progress, say, warn
from vqgen.models.vqvae import MAP_NAMES, level_shapes

LOW_USAGE_WARNING = 0.25


def code_dtype(num_codes: int) -> torch.dtype:
    return torch.int16 if num_codes <= torch.iinfo(torch.int16).max + 1 else torch.int32


AUDIT_KEYS = {"codes": "codebook_audit", "codes_top": "codebook_audit_top"}


@torch.no_grad()
def encode_split(model, dataset, batch_size: int, device: torch.device, desc: str,
                 augment: ExtractOptions | None = None):
    """Stream a split through the encoder -> (maps, labels (N,), histograms), the maps and their histograms
    keyed by tensor name: ``codes`` (N, h, w) (residual VQ: (N, depth, h, w)), and with two levels
    ``codes_top`` (N, ht, wt).

    With ``augment``, each batch is also encoded ``augment.augment_copies`` times more, shifted (the shift
    of copy c of image i drawn from (seed, c, i)), in the same pass over the images: the maps are then those
    of the N images followed by those of each copy, (N * (1 + copies), ...), the labels repeat, and the
    histograms count the images' own codes only.
    """
    copies = augment.augment_copies if augment else 0
    shifts = [draw_copy_shifts(len(dataset), augment.augment_shift, augment.augment_seed, c) for c in range(copies)]
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    dtype = code_dtype(model.cfg.num_codes)
    names = MAP_NAMES[model.cfg.levels]
    maps: list[dict[str, list[torch.Tensor]]] = [{name: [] for name in names} for _ in range(1 + copies)]
    # all codebooks' codes (K x depth); two levels have one codebook per map (no residual VQ), so K each
    histograms = {name: CodeHistogram(model.cfg.total_codes) for name in names}
    labels, start = [], 0
    for images, y in progress(loader, len(loader), desc):
        stop = start + len(images)
        versions = [images] + [shift_images(images, shift[start:stop]) for shift in shifts]
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
    ``vqvae_path`` into the code file ``out``, and shifted copies of the training images as ``augment``
    (default ``ExtractOptions()``) asks."""
    augment = augment or ExtractOptions()
    augment.validate()
    splits = list(splits or default_splits(data))
    datasets = {split: data.pick(split) for split in splits}  # an unknown or missing split fails before encoding
    check_output_path(out)
    dev = resolve_device(device)
    model, vq_meta = load_vqvae(vqvae_path, dev)
    tensors: dict[str, torch.Tensor] = {}
    audits: dict[str, dict[str, dict[str, float]]] = {AUDIT_KEYS[name]: {} for name in MAP_NAMES[model.cfg.levels]}
    for split, dataset in datasets.items():
        copies = f" and {augment.augment_copies} shifted copies" if split == "train" and augment.augment_copies else ""
        maps, labels, histograms = encode_split(model, dataset, batch_size, dev, f"encoding {split}{copies}",
                                                augment if split == "train" else None)
        for name, codes in maps.items():
            tensors[f"{split}_{name}"] = codes
            audits[AUDIT_KEYS[name]][split] = histograms[name].summary()
        tensors[f"{split}_labels"] = labels
    meta = {
        "kind": "codes",
        "vqgen_version": __version__,
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
        **{f"num_{split}": len(tensors[f"{split}_codes"]) for split in splits},
        # train_codes holds the images' codes, then those of each shifted copy: (1 + copies) x num_train_images
        "augment": {**to_dict(augment), "num_train_images": len(datasets["train"])} if "train" in datasets else None,
        **audits,
    }
    save_vqgen_file(out, tensors, meta)
    return meta


def extract_codes_for(vqvae_path: Path, out: Path, data: str | None = None, data_root: str | Path = "data",
                      batch_size: int = 256, device: str = "auto",
                      augment: ExtractOptions | None = None) -> dict[str, Any]:
    """``vqgen extract-codes``: encode the VQ-VAE's own dataset and split (or ``data``, resized to the
    VQ-VAE's image size and channels), with the shifted copies ``augment`` asks for, and warn when the codebook
    is barely used."""
    (augment or ExtractOptions()).validate()  # before the data is opened
    meta = read_metadata(vqvae_path)
    expect_kind(vqvae_path, meta, "vqvae")
    check_output_path(out)
    spec = {**meta["dataset"], "image_size": meta["image"]["size"], "channels": meta["image"]["channels"]}
    if data is not None:
        spec["data"] = data
    images = image_data_from_spec(spec, root=data_root)
    say(images.describe())
    result = extract_codes(vqvae_path, images, out, batch_size=batch_size, device=device, augment=augment)
    for key, which in (("codebook_audit", "the codebook"), ("codebook_audit_top", "the top codebook")):
        usage = result.get(key, {}).get("train", {}).get("usage", 1.0)
        if usage < LOW_USAGE_WARNING:
            warn(f"only {usage:.0%} of {which} is used; the VQ-VAE has collapsed codes "
                 "(try the default EMA + k-means + dead-code restarts)")
    return result
