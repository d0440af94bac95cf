"""A picture of the codebook: how often each code is used, and what each code looks like on its own."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.files import check_output_path
from vqgen.errors import VQGenError
from vqgen.formats.images import to_pil
from vqgen.measures import CodeHistogram
from vqgen.models.vqvae import VQVAE
from vqgen.data.batches import make_loader
from vqgen.device import resolve_device
from vqgen.tools.common import data_for_vqvae, pick_split
from vqgen.tools.draw import BACKGROUND, INK, bar_chart, font, save_image, stack

UNUSED = (214, 39, 40)
MIN_TILE = 24  # pixels; smaller tiles are enlarged (nearest neighbour)
MAX_COLUMNS = 32


@torch.no_grad()
def code_usage(model: VQVAE, dataset, batch_size: int, device: torch.device) -> CodeHistogram:
    histogram = CodeHistogram(model.cfg.num_codes)
    for images, _ in make_loader(dataset, batch_size, shuffle=False, seed=0):
        histogram.add(model.encode(images.to(device)).cpu())
    return histogram


@torch.no_grad()
def pure_code_images(model: VQVAE, map_size: int, batch_size: int = 128) -> torch.Tensor:
    """Decode, for every code k, a map_size x map_size latent map filled with k -> (K, C, H, W)."""
    device = next(model.parameters()).device
    indices = torch.arange(model.cfg.num_codes, device=device).view(-1, 1, 1).expand(-1, map_size, map_size)
    return torch.cat([model.decode(chunk).float().cpu() for chunk in indices.split(batch_size)])


def tile_sheet(tiles: torch.Tensor, order: list[int], unused: set[int], columns: int) -> Image.Image:
    """Tiles in the given order on a grid; unused codes get a red frame."""
    h, w = tiles.shape[-2:]
    scale = max(1, math.ceil(MIN_TILE / min(h, w)))
    th, tw, pad = h * scale, w * scale, 3
    rows = math.ceil(len(order) / columns)
    sheet = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + pad) + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for slot, code in enumerate(order):
        x, y = pad + (slot % columns) * (tw + pad), pad + (slot // columns) * (th + pad)
        tile = to_pil(tiles[code]).convert("RGB").resize((tw, th), Image.NEAREST)
        sheet.paste(tile, (x, y))
        if code in unused:
            draw.rectangle([x - 1, y - 1, x + tw, y + th], outline=UNUSED, width=1)
    return sheet


def caption(text: str, width: int) -> Image.Image:
    image = Image.new("RGB", (width, 20), BACKGROUND)
    ImageDraw.Draw(image).text((4, 4), text, fill=INK, font=font(12))
    return image


def codebook_picture(
    vqvae_path: Path,
    out: Path,
    *,
    data: str | None = None,
    split: str = "val",
    map_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | Path = "data",
) -> dict[str, Any]:
    """Usage histogram over a split (codes sorted by use) above each code's decoded pure map, in one PNG."""
    if out.suffix.lower() != ".png":
        raise VQGenError(f"--out {out}: must be a .png file")
    check_output_path(out)
    dev = resolve_device(device)
    model, meta = load_vqvae(vqvae_path, dev)
    if model.cfg.code_depth > 1:
        raise VQGenError(f"{vqvae_path}: a residual VQ-VAE ({model.cfg.code_depth} codebooks); the codebook picture "
                         "is made for one codebook (see its use with `vqgen evaluate --vqvae`)")
    if model.levels == 2:
        raise VQGenError(f"{vqvae_path}: a two-level VQ-VAE; the codebook picture is drawn for one-level VQ-VAEs only")
    latent_h, latent_w = model.cfg.latent_shape
    map_size = map_size if map_size is not None else min(latent_h, latent_w, 8)
    if map_size < 1:
        raise VQGenError(f"--map-size must be at least 1, not {map_size}")
    dataset = pick_split(data_for_vqvae(meta, data, data_root), split)
    histogram = code_usage(model, dataset, batch_size, dev)
    counts = histogram.counts
    summary = histogram.summary()
    order = sorted(range(len(counts)), key=lambda k: (-int(counts[k]), k))
    unused = {k for k in range(len(counts)) if counts[k] == 0}
    k = model.cfg.num_codes
    columns = min(MAX_COLUMNS, max(8, math.ceil(math.sqrt(2 * k))))
    sheet = tile_sheet(pure_code_images(model, map_size), order, unused, columns)
    width = max(sheet.width, 480)
    title = (
        f"code usage on {split} ({len(dataset)} images): {summary['codes_used']}/{k} used, "
        f"perplexity {summary['perplexity']:.1f}"
    )
    bars = bar_chart([float(counts[c]) for c in order], (width, 140), title)
    label = caption(f"each code tiled over a {map_size}x{map_size} map and decoded, most used first"
                    + (" (red: unused)" if unused else ""), width)
    save_image(stack([bars, label, sheet], horizontal=False, gap=4), out)
    return {**summary, "split": split, "count": len(dataset), "map_size": map_size, "out": str(out),
            "counts": counts.tolist()}
