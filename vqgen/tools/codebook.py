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
from vqgen.measures import CodeHistogram, usage_summary
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
    """Counts of every code on ``dataset`` (residual VQ: of all codebooks, codebook d's at d*K..)."""
    histogram = CodeHistogram(model.cfg.total_codes)
    for images, _ in make_loader(dataset, batch_size, shuffle=False, seed=0):
        histogram.add(model.encode(images.to(device)).cpu())
    return histogram


@torch.no_grad()
def pure_code_images(model: VQVAE, map_size: int, codebook: int = 0, base: int = 0,
                     batch_size: int = 128) -> torch.Tensor:
    """Decode, for every code k, a map_size x map_size latent map filled with k -> (K, C, H, W).

    Residual VQ: the codes of ``codebook``; a finer codebook's code is added to the first codebook's code
    ``base`` (alone it is a residual, nothing the decoder was trained on)."""
    device = next(model.parameters()).device
    indices = torch.arange(model.cfg.num_codes, device=device).view(-1, 1, 1).expand(-1, map_size, map_size)
    if model.cfg.code_depth == 1:
        return torch.cat([model.decode(chunk).float().cpu() for chunk in indices.split(batch_size)])
    stages = model.quantizer.stages
    under = stages[0].decode_indices(torch.full_like(indices[:1], base)) if codebook else 0.0
    latents = (stages[codebook].decode_indices(chunk) + under for chunk in indices.split(batch_size))
    return torch.cat([model.from_model(model.decoder(z)).float().cpu() for z in latents])


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
    """Usage histogram over a split (codes sorted by use) above each code's decoded pure map, in one PNG; residual
    VQ: a panel per codebook, the finer codes added to the first codebook's most used code."""
    if out.suffix.lower() != ".png":
        raise VQGenError(f"--out {out}: must be a .png file")
    check_output_path(out)
    dev = resolve_device(device)
    model, meta = load_vqvae(vqvae_path, dev)
    if model.levels == 2:
        raise VQGenError(f"{vqvae_path}: a two-level VQ-VAE; the codebook picture is drawn for one-level VQ-VAEs only")
    latent_h, latent_w = model.cfg.latent_shape
    map_size = map_size if map_size is not None else min(latent_h, latent_w, 8)
    if map_size < 1:
        raise VQGenError(f"--map-size must be at least 1, not {map_size}")
    dataset = pick_split(data_for_vqvae(meta, data, data_root), split)
    histogram = code_usage(model, dataset, batch_size, dev)
    k, depth = model.cfg.num_codes, model.cfg.code_depth
    books = histogram.counts.view(depth, k)
    base = int(books[0].argmax())  # the first codebook's most used code: what the finer codes are added to
    panels = [codebook_panel(books[d], pure_code_images(model, map_size, d, base), split, len(dataset), map_size,
                             f"codebook {d + 1} of {depth}: " if depth > 1 else "",
                             f", added to code {base} of codebook 1" if d else "")
              for d in range(depth)]
    save_image(stack(panels, horizontal=False, gap=12), out)
    return {**histogram.summary(), "split": split, "count": len(dataset), "map_size": map_size, "out": str(out),
            "counts": histogram.counts.tolist(), "codebooks": depth}


def codebook_panel(counts: torch.Tensor, tiles: torch.Tensor, split: str, count: int, map_size: int, title: str,
                   added: str) -> Image.Image:
    """One codebook: its usage histogram (codes sorted by use) above each code's decoded tile."""
    k = len(counts)
    numbers = usage_summary(counts)
    order = sorted(range(k), key=lambda c: (-int(counts[c]), c))
    unused = {c for c in range(k) if counts[c] == 0}
    columns = min(MAX_COLUMNS, max(8, math.ceil(math.sqrt(2 * k))))
    sheet = tile_sheet(tiles, order, unused, columns)
    width = max(sheet.width, 480)
    heading = (f"{title}code usage on {split} ({count} images): {numbers['codes_used']}/{k} used, "
               f"perplexity {numbers['perplexity']:.1f}")
    bars = bar_chart([float(counts[c]) for c in order], (width, 140), heading)
    label = caption(f"each code tiled over a {map_size}x{map_size} map{added} and decoded, most used first"
                    + (" (red: unused)" if unused else ""), width)
    return stack([bars, label, sheet], horizontal=False, gap=4)

