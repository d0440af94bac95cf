"""The code file (kind ``codes``) that extract-codes writes and train-prior and evaluate read.

Layout (readable with safetensors alone):

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from vqgen import __version__
from vqgen.errors import VQGenError
from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.models.rvq import flat_codes, prior_map_shape

AUDIT_KEYS = {"codes": "codebook_audit", "codes_top": "codebook_audit_top"}  # by map name (``MAP_NAMES``)


def code_dtype(num_codes: int) -> torch.dtype:
    return torch.int16 if num_codes <= torch.iinfo(torch.int16).max + 1 else torch.int32


def save_codes(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Write a code file: ``tensors`` as laid out above, ``meta`` its metadata without ``kind``, version and the
    split counts (added here). Returns the metadata written."""
    counts = {f"num_{name.removesuffix('_codes')}": len(t) for name, t in tensors.items() if name.endswith("_codes")}
    meta = {"kind": "codes", "vqgen_version": __version__, **meta, **counts}
    save_vqgen_file(out, tensors, meta)
    return meta


@dataclass
class CodeFile:
    path: Path
    meta: dict[str, Any]
    train: TensorDataset
    val: TensorDataset

    @property
    def depth(self) -> int:
        return int(self.meta.get("code_depth") or 1)

    @property
    def prior_latent_shape(self) -> tuple[int, int]:
        """The maps the prior models: (h, w), or (h, w*depth) for stacks."""
        return prior_map_shape(tuple(self.meta["latent_shape"]), self.depth)

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("label_names")) and bool((self.train.tensors[1] >= 0).all())

    @property
    def levels(self) -> int:
        return self.meta.get("levels", 1)

    @property
    def variants(self) -> int:
        """Encodings of each training image: the image's own and those of its shifted copies (``ExtractOptions``)."""
        return 1 + int((self.meta.get("augment") or {}).get("augment_copies", 0))

    def identity(self) -> dict[str, Any]:
        """What a resumed prior run must find unchanged in its code file."""
        keys = ("num_codes", "latent_shape", "vqvae_sha256", "label_names", "num_train", "num_val")
        return {k: self.meta.get(k) for k in keys}


def code_split(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], split: str) -> TensorDataset:
    """One split of a code file, checked: (code map long (h, w), or (h, w*depth) for residual VQ stacks, label
    long), and with two levels the top map (ht, wt) third."""
    k, depth = meta["num_codes"], meta.get("code_depth") or 1
    names = [("codes", "latent_shape")] + ([("codes_top", "latent_shape_top")] if meta.get("levels", 1) == 2 else [])
    try:
        labels = tensors[f"{split}_labels"].long()
        maps = [(tensors[f"{split}_{name}"].long(), meta[shape]) for name, shape in names]
    except KeyError as e:
        raise VQGenError(f"{path}: code file lacks the tensor or entry {e.args[0]}") from e
    for codes, shape in maps:
        shape = tuple(shape) if depth == 1 else (depth, *shape)
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise VQGenError(f"{path}: {split} codes lie outside 0..{k - 1}")
        if codes.shape[1:] != shape or len(labels) != len(codes):
            raise VQGenError(f"{path}: {split} tensors do not match the recorded shape {list(shape)}")
    return TensorDataset(flat_codes(maps[0][0]), labels, *(flat_codes(codes) for codes, _ in maps[1:]))


def load_codes(path: Path) -> CodeFile:
    """Read and check a code file -> datasets of (code map long (h, w) or (h, w*depth), label long[, top codes
    long (ht, wt)])."""
    tensors, meta = load_vqgen_file(path, "codes")
    splits = [code_split(path, tensors, meta, split) for split in ("train", "val")]
    if len(splits[0]) == 0:
        raise VQGenError(f"{path}: the code file holds no training codes")
    codes = CodeFile(path, meta, *splits)
    if len(codes.train) % codes.variants:
        raise VQGenError(f"{path}: {len(codes.train)} training maps are not {codes.variants} encodings of each image")
    return codes


def load_split(path: Path, split: str) -> TensorDataset:
    """The (codes, labels[, top codes]) of one split of a code file (test and all only where extract-codes
    wrote them)."""
    if split in ("train", "val"):
        codes = load_codes(path)
        return codes.train if split == "train" else codes.val
    tensors, meta = load_vqgen_file(path, "codes")
    if f"{split}_codes" not in tensors or f"{split}_labels" not in tensors:
        held = ", ".join(meta.get("codebook_audit", {}))
        raise VQGenError(f"{path}: the code file holds no {split} codes (only {held}); encode them with extract-codes")
    return code_split(path, tensors, meta, split)
