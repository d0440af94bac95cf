"""A small Python API: load checkpoints, turn images into codes and back, sample from a prior.

    import vqgen

    vq = vqgen.load_vqvae("checkpoints/vqvae.safetensors")
    images = vqgen.read_images(["a.png", "b.png"], vq)      # (2, C, H, W) in [0, 1], at vq's size
    codes = vqgen.encode(vq, images)                        # (2, h, w) code indices
    vqgen.save_grid(vqgen.decode(vq, codes), "recon.png")

    prior = vqgen.load_prior("checkpoints/prior.safetensors")
    codes = vqgen.sample_codes(prior, 16, labels="7", seed=0)
    vqgen.save_grid(vqgen.decode(vq, codes), "sevens.png", nrow=4)

Models come back in eval mode with their file's metadata as ``model.meta``; results are CPU tensors.
A two-level VQ-VAE (VQ-VAE-2) encodes to, decodes from and samples (top, bottom) pairs of maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from vqgen.formats import checkpoints
from vqgen.data import fit_image, read_image
from vqgen.config import SampleOptions
from vqgen.errors import VQGenError
from vqgen.formats.images import save_grid, save_png
from vqgen.models.prior import CodePrior
from vqgen.models.rvq import stacked_codes
from vqgen.models.vqvae import VQVAE, Codes
from vqgen.pretrained import pretrained_path, resolve
from vqgen.sampling import choose_guidance, choose_residual_temperature, choose_temperature, sample_maps, sampler_for
from vqgen.sampling.labels import label_index

DEFAULTS = SampleOptions()  # the sampling defaults of `vqgen sample`

__all__ = [
    "load_vqvae", "load_prior", "load_pretrained", "read_images", "encode", "decode", "reconstruct", "sample_codes",
    "save_grid", "save_png",
]


def load_vqvae(path: str | Path, device: str | torch.device = "cpu") -> VQVAE:
    """A VQ-VAE checkpoint (or a shipped model's name) -> model in eval mode, with its metadata as ``.meta``."""
    model, meta = checkpoints.load_vqvae(resolve(path, "vqvae"), device)
    model.meta = meta
    return model


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> CodePrior:
    """A prior checkpoint (or a shipped model's name) -> its model (gated PixelCNN, transformer or masked) in eval mode,
    with its metadata as ``.meta``."""
    model, meta = checkpoints.load_prior(resolve(path, "prior"), device)
    model.meta = meta
    return model


def load_pretrained(name: str = "mnist5k", device: str | torch.device = "cpu") -> tuple[VQVAE, CodePrior]:
    """The VQ-VAE and prior shipped with vqgen under ``name`` (see ``vqgen.pretrained``)."""
    return load_vqvae(pretrained_path(name, "vqvae"), device), load_prior(pretrained_path(name, "prior"), device)


def read_images(paths: Sequence[str | Path], vqvae: VQVAE) -> torch.Tensor:
    """Image files -> (N, C, H, W) floats in [0, 1], resized and centre-cropped to what ``vqvae`` expects."""
    channels, size = vqvae.cfg.in_channels, tuple(vqvae.cfg.image_size)
    return torch.stack([fit_image(read_image(Path(p), channels), size, channels) for p in paths])


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _maps(codes: Codes) -> tuple[torch.Tensor, ...]:
    return tuple(codes) if isinstance(codes, (tuple, list)) else (codes,)


def _joined(maps: tuple[torch.Tensor, ...]) -> Codes:
    return maps if len(maps) > 1 else maps[0]


@torch.no_grad()
def encode(vqvae: VQVAE, images: torch.Tensor, batch_size: int = 256) -> Codes:
    """Images (N, C, H, W) in [0, 1] -> code indices (N, h, w), int64 (residual VQ: (N, depth, h, w)); (top,
    bottom) maps for two levels."""
    if images.dim() == 3:
        images = images[None]
    expected = (vqvae.cfg.in_channels, *vqvae.cfg.image_size)
    if tuple(images.shape[1:]) != expected:
        raise VQGenError(f"images of shape {tuple(images.shape[1:])}, but this VQ-VAE takes {expected}")
    device = _device(vqvae)
    chunks = [_maps(vqvae.encode(chunk.to(device))) for chunk in images.split(batch_size)]
    return _joined(tuple(torch.cat([c[i] for c in chunks]).cpu() for i in range(len(chunks[0]))))


@torch.no_grad()
def decode(vqvae: VQVAE, codes: Codes, batch_size: int = 256) -> torch.Tensor:
    """Code indices (N, h, w) (residual VQ: (N, depth, h, w)), or (top, bottom) maps for two levels -> images
    (N, C, H, W) in [0, 1]."""
    maps = tuple(m[None] if m.dim() == 2 else m for m in _maps(codes))
    if len(maps) != vqvae.cfg.levels:
        raise VQGenError(f"this VQ-VAE has {vqvae.cfg.levels} level(s), but {len(maps)} code map(s) were given")
    k = vqvae.cfg.num_codes
    if any(m.numel() and (int(m.min()) < 0 or int(m.max()) >= k) for m in maps):
        raise VQGenError(f"codes must lie in 0..{k - 1}")
    device = _device(vqvae)
    parts = zip(*(m.split(batch_size) for m in maps))
    return torch.cat([vqvae.decode(_joined(tuple(c.long().to(device) for c in part))).float().cpu() for part in parts])


def reconstruct(vqvae: VQVAE, images: torch.Tensor) -> torch.Tensor:
    """Encode then decode: what the VQ-VAE keeps of each image."""
    return decode(vqvae, encode(vqvae, images))


@torch.no_grad()
def sample_codes(
    prior: CodePrior,
    n: int,
    labels: int | str | Sequence[int | str] | None = None,
    *,
    temperature: float | None = DEFAULTS.temperature,
    top_k: int | None = DEFAULTS.top_k,
    seed: int = 0,
    sampler: str | None = None,
    guidance: float | None = DEFAULTS.guidance,
    steps: int | None = DEFAULTS.steps,
    choice_temperature: float | None = DEFAULTS.choice_temperature,
    residual_temperature: float | None = DEFAULTS.residual_temperature,
) -> Codes:
    """Draw ``n`` code maps (n, h, w) from the prior (residual VQ codes: stacks (n, depth, h, w); (top, bottom)
    maps from a two-level one).

    ``labels`` (conditional priors only): one class, index or name, for all samples, or one per
    sample. ``sampler``: a name from ``vqgen.sampling.SAMPLERS``, ``cached`` (the default, for either
    raster-order architecture) or ``full``. ``guidance`` S: classifier-free guidance scale (1: plain conditional
    sampling; S != 1 needs a prior trained with label dropout; None: the `vqgen sample` default).
    ``temperature`` None: the `vqgen sample` default (with guidance the one the prior records, else 1). A masked
    prior draws in ``steps`` parallel steps with ``choice_temperature`` (None: the `vqgen sample` defaults);
    ``sampler`` is for the raster-order priors. ``residual_temperature``: that of the finer codes of residual VQ
    stacks (None: the one the prior records).
    """
    if n < 1:
        raise VQGenError(f"n must be at least 1, not {n}")
    if temperature is not None and not temperature > 0:
        raise VQGenError(f"temperature must be positive, not {temperature}")
    draw = sampler_for(prior, sampler or "cached", steps, choice_temperature)
    guidance = choose_guidance(prior, guidance)
    temperature = choose_temperature(prior, temperature, guidance)
    residual_temperature = choose_residual_temperature(prior, residual_temperature)
    y = _label_tensor(prior, labels, n)
    generator = torch.Generator().manual_seed(seed)
    codes = sample_maps(draw, prior, n, labels=y, temperature=temperature, top_k=top_k,
                        generator=generator, device=_device(prior), guidance=guidance,
                        residual_temperature=residual_temperature)
    depth = getattr(prior.cfg, "code_depth", 1)  # residual VQ: the prior's (n, h, w*depth) maps back to stacks
    return _joined(tuple(stacked_codes(m, depth).cpu() for m in _maps(codes)))


def _label_tensor(prior: CodePrior, labels, n: int) -> torch.Tensor | None:
    if not prior.conditional:
        if labels is not None:
            raise VQGenError("labels were given, but this prior is unconditional")
        return None
    names = (getattr(prior, "meta", None) or {}).get("label_names") or [str(c) for c in range(prior.cfg.num_classes)]
    if labels is None:
        raise VQGenError(f"this prior is class-conditional: pass labels (one of {', '.join(names[:10])}, ...)")
    wanted = [labels] * n if isinstance(labels, (int, str)) else list(labels)
    if len(wanted) != n:
        raise VQGenError(f"got {len(wanted)} labels for {n} samples")
    return torch.tensor([label_index(label, names) for label in wanted], dtype=torch.long)
