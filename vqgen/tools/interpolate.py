"""Walk from one image to another: in the encoder's continuous space, and code by code.

Two-level VQ-VAEs walk through the bottom encoder's features (the top map follows them), and swap
the codes of both maps, top and bottom positions mixed in one random order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.files import check_output_path
from vqgen.config import check
from vqgen.formats.images import save_grid
from vqgen.models.vqvae import VQVAE
from vqgen.device import resolve_device
from vqgen.tools.common import load_image_ref


def codes_path_for(out: Path) -> Path:
    """walk.png -> walk.codes.png"""
    return out.with_name(f"{out.stem}.codes{out.suffix or '.png'}")


@torch.no_grad()
def latent_walk(model: VQVAE, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Blend the encoder outputs of a and b linearly, quantize each blend, decode -> (steps, C, H, W)."""
    z = model.encoder(model.to_model(torch.stack([a, b])))
    t = torch.linspace(0, 1, steps, device=z.device).view(-1, 1, 1, 1)
    blends = (1 - t) * z[:1] + t * z[1:]
    return model.decode(model.features_to_codes(blends))


@torch.no_grad()
def code_walk(model: VQVAE, a: torch.Tensor, b: torch.Tensor, steps: int, seed: int) -> tuple[torch.Tensor, int]:
    """Swap a's codes for b's one position at a time (in a seeded random order); decode ``steps`` stages.

    Returns (images (steps, C, H, W), how many positions hold different codes in a and b).
    """
    encoded = model.encode(torch.stack([a, b]))
    levels = encoded if isinstance(encoded, tuple) else (encoded,)
    shapes = [m.shape[1:] for m in levels]
    code_a, code_b = (torch.cat([m[i].flatten() for m in levels]) for i in (0, 1))  # every level's positions
    order = torch.randperm(code_a.numel(), generator=torch.Generator().manual_seed(seed)).to(code_a.device)
    stages = []
    for s in range(steps):
        swapped = round(s / (steps - 1) * code_a.numel())
        mixed = code_a.clone()
        mixed[order[:swapped]] = code_b[order[:swapped]]
        stages.append(mixed)
    mixed = torch.stack(stages).split([shape.numel() for shape in shapes], dim=1)
    maps = tuple(part.view(steps, *shape) for part, shape in zip(mixed, shapes))
    return model.decode(maps if len(maps) > 1 else maps[0]), int((code_a != code_b).sum())


def interpolate(vqvae_path: Path, image_a: str, image_b: str, out: Path, *, steps: int = 10, seed: int = 0,
                device: str = "auto", data_root: str | Path = "data") -> dict[str, Any]:
    """Write two strips, ``out`` (encoder-space walk) and ``out``.codes.png (code swaps), each A, steps..., B."""
    check(steps >= 2, f"--steps must be at least 2, not {steps}")
    check(out.suffix.lower() == ".png", f"--out {out}: must be a .png file")
    check_output_path(out)
    check_output_path(codes_path_for(out))
    dev = resolve_device(device)
    model, meta = load_vqvae(vqvae_path, dev)
    a = load_image_ref(image_a, meta, data_root).to(dev)
    b = load_image_ref(image_b, meta, data_root).to(dev)
    latent = latent_walk(model, a, b, steps)
    codes, differing = code_walk(model, a, b, steps, seed)
    codes_out = codes_path_for(out)
    for images, path in ((latent, out), (codes, codes_out)):
        strip = torch.cat([a[None], images.float(), b[None]]).cpu()
        save_grid(strip, path, nrow=len(strip))
    shapes = [model.cfg.latent_shape] + ([model.cfg.top_latent_shape] if model.levels == 2 else [])
    return {"latent": str(out), "codes": str(codes_out), "steps": steps, "differing_codes": differing,
            "num_positions": sum(h * w for h, w in shapes)}
