"""Stage 4: draw code maps from the prior, decode them with the VQ-VAE, write PNGs and the codes.

Residual VQ: the prior draws (h, w*depth) maps (``vqgen.models.rvq.flat_codes``), turned back into
stacks (depth, h, w) for decoding and for the samples file.

A two-level prior draws the top map, then the bottom map given it (both with the chosen sampler,
labels and guidance); the VQ-VAE decodes both, and the samples file holds both maps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.formats.files import check_output_path, file_sha256
from vqgen.formats.samples import save_samples
from vqgen.config import SampleOptions
from vqgen.errors import VQGenError
from vqgen.device import resolve_device
from vqgen.models.rvq import stacked_codes
from vqgen.models.vqvae import MAP_NAMES
from vqgen.sampling import (
    choose_guidance, choose_residual_temperature, choose_temperature, is_masked, sample_maps, sampler_for,
)
from vqgen.sampling.labels import parse_labels


GRID_COLUMNS = 16  # a class with more samples wraps into a block of rows


def grid_cells(images: torch.Tensor, row_lengths: list[int] | None) -> tuple[torch.Tensor, int]:
    """The grid's cells and columns: rows of 8, or one block per class of the given row lengths, wrapped at
    ``GRID_COLUMNS``, short rows padded with blank cells; blocks of several rows are parted by a blank row."""
    if row_lengths is None:
        return images, min(8, len(images))
    columns = min(max(row_lengths), GRID_COLUMNS)
    blank = torch.full_like(images[:1], 0.5)  # the grid's padding colour
    parted = max(row_lengths) > columns
    cells, start = [], 0
    for block, length in enumerate(row_lengths):
        if parted and block:
            cells += [blank] * columns
        rows = -(-length // columns)
        cells += [images[start : start + length]] + [blank] * (rows * columns - length)
        start += length
    return torch.cat(cells), columns


def resolve_vqvae_path(prior_path: Path, meta: dict[str, Any], override: Path | None) -> Path:
    """The VQ-VAE named in the prior (as recorded, else beside the prior), unless overridden."""
    if override is not None:
        return override
    recorded = Path(meta["vqvae_path"])
    for candidate in (recorded, prior_path.parent / recorded.name):
        if candidate.is_file():
            return candidate
    raise VQGenError(f"{prior_path}: its VQ-VAE {recorded} is missing; pass --vqvae PATH")


def run(prior_path: Path, out_dir: Path, n: int | None = None, *, vqvae_path: Path | None = None,
        options: SampleOptions | None = None, **changes: Any) -> dict[str, Any]:
    """Stage 4, ``vqgen sample``: draw, decode and write samples; ``options`` (default ``SampleOptions()``) with
    ``changes`` applied, e.g. ``run(prior, out, 100, guidance=2)``."""
    opts = replace(options or SampleOptions(), **changes, **({} if n is None else {"n": n}))
    opts.validate()
    n, label, temperature, top_k, guidance = opts.n, opts.label, opts.temperature, opts.top_k, opts.guidance
    check_output_path(out_dir, folder=True)  # before any work; nothing is created until the samples exist
    dev = resolve_device(opts.device)
    prior, meta = load_prior(prior_path, dev)
    draw = sampler_for(prior, opts.sampler, opts.steps, opts.choice_temperature)
    guidance = choose_guidance(prior, guidance, f"{prior_path}: --guidance")
    temperature = choose_temperature(prior, temperature, guidance)
    residual_temperature = choose_residual_temperature(prior, opts.residual_temperature)
    k = prior.cfg.num_codes
    if top_k is not None and not 1 <= top_k <= k:
        raise VQGenError(f"--top-k must be between 1 and K={k}, not {top_k}")
    labels, row_lengths = parse_labels(label, meta.get("label_names"), prior.conditional, n)
    vq_path = resolve_vqvae_path(prior_path, meta, vqvae_path)
    vqvae, vq_meta = load_vqvae(vq_path, dev)
    check_same_vqvae(prior_path, meta, vq_path, vqvae.cfg.num_codes, opts.allow_vqvae_mismatch)
    depth = meta.get("code_depth") or 1
    if vqvae.cfg.code_depth != depth:
        raise VQGenError(f"{vq_path}: has {vqvae.cfg.code_depth} codes per position, but the prior models {depth}")
    levels = meta.get("levels", 1)
    if vqvae.cfg.levels != levels:
        raise VQGenError(f"{vq_path}: a VQ-VAE of {vqvae.cfg.levels} level(s), but the prior {prior_path} has {levels}")

    generator = torch.Generator().manual_seed(opts.seed)
    maps: list[tuple[torch.Tensor, ...]] = []  # per batch: (codes,), or (top, bottom)
    images = []
    for start in range(0, n, opts.batch_size):
        size = min(opts.batch_size, n - start)
        y = torch.tensor(labels[start : start + size]) if labels is not None else None
        batch = sample_maps(
            draw, prior, size, labels=y, temperature=temperature, top_k=top_k, generator=generator,
            device=dev, guidance=guidance, residual_temperature=residual_temperature,
        )
        if not isinstance(batch, tuple):
            batch = stacked_codes(batch, depth)  # residual VQ: the prior's (h, w*depth) maps back to stacks
        maps.append(tuple(m.cpu() for m in batch) if isinstance(batch, tuple) else (batch.cpu(),))
        images.append(vqvae.decode(batch).cpu())
    images_t = torch.cat(images)

    record = {
        "prior_path": str(prior_path.resolve()),
        "prior_sha256": file_sha256(prior_path),
        "vqvae_path": str(vq_path.resolve()),
        "num_codes": k,
        "code_depth": depth,
        "levels": levels,
        "latent_shape": list(meta["latent_shape"]),  # the VQ-VAE's (bottom) map, not the prior's (h, w*depth)
        **({"latent_shape_top": meta["latent_shape_top"]} if levels == 2 else {}),
        "label_names": meta.get("label_names"),
        "labels_requested": labels,
        "temperature": temperature,
        **({"residual_temperature": residual_temperature} if depth > 1 else {}),
        "top_k": top_k,
        "guidance": guidance,
        "seed": opts.seed,
        "sampler": "masked" if is_masked(prior) else opts.sampler,
        **(draw.keywords if is_masked(prior) else {}),  # the masked prior's steps and choice temperature
        "image": vq_meta["image"],
        "dataset": meta.get("dataset"),
    }
    tensors = {name: torch.cat([m[i] for m in maps]) for i, name in enumerate(MAP_NAMES[levels])}
    record = save_samples(out_dir, images_t, grid_cells(images_t, row_lengths), tensors, labels, record)
    return {**record, "count": n, "grid": str(out_dir / "grid.png")}


def check_same_vqvae(prior_path: Path, meta: dict[str, Any], vq_path: Path, vq_codes: int, allow: bool) -> None:
    """The prior was fit to one VQ-VAE's codes: decoding with another one gives garbage."""
    if vq_codes != meta["num_codes"]:
        raise VQGenError(f"{vq_path}: has K={vq_codes} codes, but the prior {prior_path} models K={meta['num_codes']}")
    if allow:
        return
    if file_sha256(vq_path) != meta.get("vqvae_sha256"):
        raise VQGenError(
            f"{vq_path}: not the VQ-VAE whose codes trained {prior_path} (sha256 differs); "
            "pass --allow-vqvae-mismatch to decode anyway"
        )
