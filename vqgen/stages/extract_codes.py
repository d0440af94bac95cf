"""Stage 2: encode a dataset into code maps and save them, with labels, in one safetensors file.

Code file layout (readable with safetensors alone):

* tensors ``train_codes`` / ``val_codes``: (N, h, w) int16 (int32 when K > 32767);
  ``train_labels`` / ``val_labels``: (N,) int64, -1 where unlabelled;
* metadata key ``vqgen``: JSON with ``kind: "codes"``, ``num_codes``, ``latent_shape``,
  ``vqvae_sha256``, ``vqvae_path``, ``dataset``, ``label_names``, ``image`` and a codebook audit
  per split (``usage``, ``perplexity``, ``top10_share``, ``dead_codes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqgen import __version__
from vqgen.checkpoint import check_output_path, file_sha256, load_vqvae, save_vqgen_file
from vqgen.data import ImageData
from vqgen.eval.metrics import CodeHistogram
from vqgen.runtime import make_loader, progress, resolve_device

LOW_USAGE_WARNING = 0.25


def code_dtype(num_codes: int) -> torch.dtype:
    return torch.int16 if num_codes <= torch.iinfo(torch.int16).max + 1 else torch.int32


@torch.no_grad()
def encode_split(model, dataset, batch_size: int, device: torch.device, desc: str):
    """Stream a split through the encoder -> (codes (N, h, w), labels (N,), histogram)."""
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    dtype = code_dtype(model.cfg.num_codes)
    codes, labels = [], []
    histogram = CodeHistogram(model.cfg.num_codes)
    for images, y in progress(loader, len(loader), desc):
        indices = model.encode(images.to(device)).cpu()
        histogram.add(indices)
        codes.append(indices.to(dtype))
        labels.append(torch.as_tensor(y, dtype=torch.long))
    return torch.cat(codes), torch.cat(labels), histogram


def extract_codes(
    vqvae_path: Path, data: ImageData, out: Path, batch_size: int = 256, device: str = "auto"
) -> dict[str, Any]:
    """Encode both splits of ``data`` with the VQ-VAE at ``vqvae_path`` into the code file ``out``."""
    check_output_path(out)
    dev = resolve_device(device)
    model, vq_meta = load_vqvae(vqvae_path, dev)
    tensors: dict[str, torch.Tensor] = {}
    audit: dict[str, dict[str, float]] = {}
    for split, dataset in (("train", data.train), ("val", data.val)):
        codes, labels, histogram = encode_split(model, dataset, batch_size, dev, f"encoding {split}")
        tensors[f"{split}_codes"] = codes
        tensors[f"{split}_labels"] = labels
        audit[split] = histogram.summary()
    meta = {
        "kind": "codes",
        "vqgen_version": __version__,
        "num_codes": model.cfg.num_codes,
        "latent_shape": list(model.cfg.latent_shape),
        "code_dtype": str(code_dtype(model.cfg.num_codes)).removeprefix("torch."),
        "vqvae_path": str(Path(vqvae_path).resolve()),
        "vqvae_sha256": file_sha256(vqvae_path),
        "dataset": data.spec,
        "label_names": data.label_names,
        "image": vq_meta["image"],
        "num_train": len(tensors["train_codes"]),
        "num_val": len(tensors["val_codes"]),
        "codebook_audit": audit,
    }
    save_vqgen_file(out, tensors, meta)
    return meta
