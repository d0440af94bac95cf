"""What `vqgen evaluate` is asked: the request, the given files read and checked, the real data, the samples."""

from __future__ import annotations

from typing import Any

from vqgen.formats.files import expect_kind, read_metadata
from vqgen.data import ImageData, load_image_data, rebuild_data
from vqgen.config import EvaluateRequest
from vqgen.errors import VQGenError
from vqgen.formats.samples import CODES_FILE, sample_folder_shape

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
        record = req.samples / CODES_FILE
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
        spec = recorded[0]["dataset"]
        rebuilds_shape = image is not None and [spec.get("resolved_image_size"), spec.get("resolved_channels")] == [
            image["size"], image["channels"]
        ]
        # the recorded options rebuild the files' shape; another dataset needs it forced (so does the
        # classifier command evaluate suggests, which is why it is not forced always)
        return rebuild_data(spec, image, req.data, req.data_root, force_shape=req.data is not None or not rebuilds_shape)
    if req.data is None:
        raise VQGenError("--data is needed: none of the given files records the dataset it came from")
    return load_image_data(
        req.data,
        image_size=image["size"][0] if image else None,
        channels=image["channels"] if image else None,
        root=req.data_root,
    )


