"""Originals beside their reconstructions: a grid, one PNG per reconstruction, MSE and PSNR."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.files import atomic_write_text, check_output_path
from vqgen.data import spread
from vqgen.config import check
from vqgen.formats.images import interleave, save_grid, save_png
from vqgen.measures import psnr_per_image
from vqgen.device import resolve_device
from vqgen.tools.common import data_for_vqvae, pick_split, source_name


@torch.no_grad()
def reconstruct(
    vqvae_path: Path,
    out_dir: Path,
    *,
    data: str | None = None,
    split: str = "val",
    n: int = 64,
    batch_size: int = 64,
    device: str = "auto",
    data_root: str | Path = "data",
) -> dict[str, Any]:
    """Reconstruct ``n`` images spread over a split; write ``out_dir``/grid.png, images/ and metrics.json."""
    check(n >= 1, f"--n must be at least 1, not {n}")
    check(batch_size >= 1, f"--batch-size must be positive, not {batch_size}")
    check_output_path(out_dir, folder=True)
    dev = resolve_device(device)
    model, meta = load_vqvae(vqvae_path, dev)
    images_data = data_for_vqvae(meta, data, data_root)
    dataset = pick_split(images_data, split)
    count = min(n, len(dataset))
    chosen = spread(len(dataset), count)
    originals, recons = [], []
    loader = DataLoader(torch.utils.data.Subset(dataset, chosen), batch_size=batch_size)
    for images, _ in loader:
        images = images.to(dev)
        recon = model.decode(model.encode(images))
        originals.append(images.cpu())
        recons.append(recon.float().cpu())
    originals_t, recons_t = torch.cat(originals), torch.cat(recons)
    names = output_names(dataset, chosen, images_data.spec["data"])

    psnr = psnr_per_image(recons_t, originals_t)
    mse = float((recons_t - originals_t).pow(2).mean())
    image_dir = out_dir / "images"
    for name, image in zip(names, recons_t):
        save_png(image, image_dir / name)
    pairs_per_row = min(8, math.ceil(math.sqrt(count)))
    save_grid(interleave(originals_t, recons_t), out_dir / "grid.png", nrow=2 * pairs_per_row)
    result = {
        "vqvae": str(vqvae_path),
        "data": data or meta["dataset"]["data"],
        "split": split,
        "count": count,
        "mse": mse,
        "psnr": float(psnr.mean()),
        "psnr_of_mean_mse": 10 * math.log10(1 / max(mse, 1e-12)),
        "grid": str(out_dir / "grid.png"),
        "images": str(image_dir),
        "per_image_psnr": {name: round(float(p), 3) for name, p in zip(names, psnr)},
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result


def output_names(dataset, chosen: list[int], folder: str | Path) -> list[str]:
    """Folder data: the input's path below the folder, as .png (cats/01.jpg -> cats/01.png); else the
    item's index in the split (0000.png, ...)."""
    files = [source_name(dataset, i) for i in chosen]
    if all(f is not None for f in files):
        relative = [f.relative_to(folder) if f.is_relative_to(folder) else Path(f.name) for f in files]
        names = [str(r.with_suffix(".png")) for r in relative]
        if len(set(names)) < len(names):  # a.jpg and a.png side by side: keep the old suffix too
            names = [str(r) + ".png" if r.suffix.lower() != ".png" else str(r) for r in relative]
        return names
    width = max(4, len(str(max(chosen))))
    return [f"{i:0{width}d}.png" for i in chosen]
