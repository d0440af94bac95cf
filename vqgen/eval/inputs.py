"""What `vqgen evaluate` is asked: the request, the given files read and checked, the real data, the samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torch.utils.data import TensorDataset

from vqgen.checkpoint import expect_kind, load_vqgen_file, read_metadata
from vqgen.data import ImageData, image_data_from_spec, load_image_data, read_image
from vqgen.config import EvaluateRequest
from vqgen.errors import VQGenError

__all__ = ["EvaluateRequest", "Metas"]  # the request is a config dataclass (its options are the CLI's)


Metas = dict[str, dict[str, Any]]


def read_inputs(req: EvaluateRequest) -> Metas:
    """Metadata of every given file, checked for kind and for belonging together."""
    metas: Metas = {}
    for name in ("vqvae", "codes", "prior"):
        path = getattr(req, name)
        if path is not None:
            metas[name] = read_metadata(path)
            expect_kind(path, metas[name], name)
    if req.samples is not None:
        record = req.samples / "codes.safetensors"
        if record.is_file():
            metas["samples"] = read_metadata(record)
            expect_kind(record, metas["samples"], "samples")
    if "prior" in metas and "codes" in metas:
        if metas["codes"].get("vqvae_sha256") != metas["prior"].get("vqvae_sha256"):
            raise VQGenError(f"{req.codes}: these codes come from another VQ-VAE than the one {req.prior} was fit to")
    images = {
        name: (*m["image"]["size"], m["image"]["channels"]) for name, m in metas.items() if m.get("image")
    }
    if len(set(images.values())) > 1:
        shown = ", ".join(f"{name} {c}x{h}x{w}" for name, (h, w, c) in images.items())
        raise VQGenError(f"the given files disagree on the image shape ({shown})")
    return metas


def resolve_data(req: EvaluateRequest, metas: Metas) -> ImageData:
    """The dataset recorded in the given files (--data overrides its name), at their image shape."""
    recorded = [m for m in metas.values() if m.get("dataset")]
    image = next((m["image"] for m in metas.values() if m.get("image")), None)
    if image is None and req.samples is not None:
        image = sample_folder_shape(req.samples)
    if recorded:
        spec = dict(recorded[0]["dataset"])
        rebuilds_shape = image is not None and [spec.get("resolved_image_size"), spec.get("resolved_channels")] == [
            image["size"], image["channels"]
        ]
        if req.data is not None:
            spec["data"] = req.data
        if image is not None and (req.data is not None or not rebuilds_shape):
            # the recorded options rebuild the files' shape; another dataset needs it forced (so does the
            # classifier command evaluate suggests, which is why it is not forced always)
            spec["image_size"], spec["channels"] = image["size"][0], image["channels"]
        return image_data_from_spec(spec, root=req.data_root)
    if req.data is None:
        raise VQGenError("--data is needed: none of the given files records the dataset it came from")
    return load_image_data(
        req.data,
        image_size=image["size"][0] if image else None,
        channels=image["channels"] if image else None,
        root=req.data_root,
    )


def sample_png_files(folder: Path) -> list[tuple[int, Path]]:
    """The numbered PNGs `vqgen sample` writes (NNNN.png; grid.png and others are left out), in order."""
    files = [(int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit()]
    if not files:
        raise VQGenError(f"{folder}: no numbered sample images (NNNN.png) found")
    return sorted(files)


def sample_folder_shape(folder: Path) -> dict[str, Any]:
    from PIL import Image

    _, first = sample_png_files(folder)[0]
    with Image.open(first) as im:
        return {"size": [im.height, im.width], "channels": 1 if im.mode in ("1", "L", "LA", "I", "I;16") else 3}


def load_sample_images(folder: Path, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
    """Every numbered sample of the folder (none left out) -> (N, C, H, W) in [0, 1] and their numbers."""
    files = sample_png_files(folder)
    images = [read_image(path, channels) for _, path in files]
    for (_, path), image in zip(files, images):
        if tuple(image.shape[1:]) != tuple(size):
            h, w = image.shape[1:]
            raise VQGenError(f"{path}: a {h}x{w} image, but the data is {size[0]}x{size[1]}")
    return torch.stack(images), [index for index, _ in files]


def held_out_codes(path: Path, split: str) -> TensorDataset:
    """The (codes, labels[, top codes]) of one split of a code file (test and all only where extract-codes
    wrote them)."""
    from vqgen.train.prior import code_split, load_codes

    if split in ("train", "val"):
        codes = load_codes(path)
        return codes.train if split == "train" else codes.val
    tensors, meta = load_vqgen_file(path, "codes")
    if f"{split}_codes" not in tensors or f"{split}_labels" not in tensors:
        held = ", ".join(meta.get("codebook_audit", {}))
        raise VQGenError(f"{path}: the code file holds no {split} codes (only {held}); encode them with extract-codes")
    return code_split(path, tensors, meta, split)
