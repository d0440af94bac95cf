"""`vqgen edit`: redraw a box of an image through its codes with a masked prior.

The image is fitted to the prior's VQ-VAE (resized and centre-cropped to its size, as everywhere) and
encoded; the box, in pixels of that fitted image (x0,y0 its top-left corner, x1,y1 one past its
bottom-right one), hides every code whose cell of f x f pixels (f the VQ-VAE's downsampling factor) it
overlaps; the masked prior redraws those codes given all the others (``vqgen.sampling.masked``), n
times, and the VQ-VAE decodes each map. Codes outside the box are kept bit for bit, but the decoder
sees the whole map, so pixels near the box may change a little too.

Only a masked prior can do this: a raster-order prior (PixelCNN, transformer) draws each code from
the codes before it alone, so it cannot take the codes after the box into account; edit refuses it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from vqgen.api import decode, encode
from vqgen.config import SampleOptions
from vqgen.device import resolve_device
from vqgen.errors import VQGenError
from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.formats.files import check_output_path, file_sha256, staged_folder
from vqgen.formats.images import save_png
from vqgen.formats.samples import save_samples
from vqgen.sampling import choose_guidance, choose_temperature, is_masked, sampler_for
from vqgen.sampling.labels import label_index
from vqgen.stages.sample import check_same_vqvae, resolve_vqvae_path
from vqgen.tools.common import load_image_ref


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``x0,y0,x1,y1`` -> four whole numbers."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        raise VQGenError(f"--box must be four whole numbers x0,y0,x1,y1 (pixels), not {text!r}")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


def box_cells(box: tuple[int, int, int, int], image_size: tuple[int, int], factor: int) -> torch.Tensor:
    """Bool (h, w): the code cells (``factor`` pixels a side) the pixel box overlaps."""
    x0, y0, x1, y1 = box
    height, width = image_size
    if x1 <= x0 or y1 <= y0:
        raise VQGenError(f"--box {x0},{y0},{x1},{y1} is empty: it needs x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise VQGenError(f"--box {x0},{y0},{x1},{y1} is not inside the {width}x{height} image (x from 0 to {width}, "
                         f"y from 0 to {height}, as the VQ-VAE sees it)")
    cells = torch.zeros(height // factor, width // factor, dtype=torch.bool)
    cells[y0 // factor : -(-y1 // factor), x0 // factor : -(-x1 // factor)] = True
    return cells


def edit_labels(prior: torch.nn.Module, meta: dict[str, Any], label: str | None, guidance: float | None,
                n: int) -> tuple[torch.Tensor | None, float]:
    """The labels of the ``n`` draws and the guidance scale. A conditional prior without --label draws in its
    "no class" mode (label dropout), where guidance has nothing to act on."""
    if not prior.conditional:
        if label is not None:
            raise VQGenError("--label was given, but this prior is unconditional")
        return None, choose_guidance(prior, guidance, "--guidance")
    if label is None:
        if guidance not in (None, 1):
            raise VQGenError("--guidance needs --label: it pushes the redrawn codes towards a class")
        return prior.null_labels(n), 1.0  # with no "no class" row: the one-line error of null_labels
    names = meta.get("label_names") or [str(c) for c in range(prior.cfg.num_classes)]
    labels = torch.full((n,), label_index(label, names, "--label"), dtype=torch.long)
    return labels, choose_guidance(prior, guidance, "--guidance")


def edit(prior_path: Path, image: str, box: str, out: Path, n: int = 8, label: str | None = None, *,
         vqvae_path: Path | None = None, options: SampleOptions | None = None, data_root: str | Path = "data",
         **changes: Any) -> dict[str, Any]:
    """Redraw the codes of ``image`` under ``box`` ``n`` times; write the folder ``out``: ``NNNN.png`` (the edits),
    ``original.png``, ``grid.png`` (original, reconstruction, edits side by side) and ``codes.safetensors``."""
    opts = dataclasses.replace(options or SampleOptions(), **changes)
    opts.validate()
    if n < 1:
        raise VQGenError(f"--n must be at least 1, not {n}")
    pixels = parse_box(box)
    check_output_path(out, folder=True)
    dev = resolve_device(opts.device)
    prior, meta = load_prior(prior_path, dev)
    if not is_masked(prior):
        arch = getattr(prior.cfg, "arch", "pixelcnn")
        raise VQGenError(f"{prior_path}: edit needs a masked prior (train-prior --arch masked); a {arch} prior draws "
                         "codes in raster order and cannot redraw a region given the codes after it")
    draw = sampler_for(prior, opts.sampler, opts.steps, opts.choice_temperature)
    vq_path = resolve_vqvae_path(prior_path, meta, vqvae_path)
    vqvae, vq_meta = load_vqvae(vq_path, dev)
    check_same_vqvae(prior_path, meta, vq_path, vqvae.cfg.num_codes, opts.allow_vqvae_mismatch)
    hidden = box_cells(pixels, tuple(vqvae.cfg.image_size), vqvae.cfg.factor)
    labels, guidance = edit_labels(prior, meta, label, opts.guidance, n)
    temperature = choose_temperature(prior, opts.temperature, guidance)
    if opts.top_k is not None and not 1 <= opts.top_k <= prior.cfg.num_codes:
        raise VQGenError(f"--top-k must be between 1 and K={prior.cfg.num_codes}, not {opts.top_k}")

    picture = load_image_ref(image, vq_meta, data_root)
    codes = encode(vqvae, picture[None])
    generator = torch.Generator().manual_seed(opts.seed)
    edited = draw(prior, n, labels=labels, temperature=temperature, top_k=opts.top_k, generator=generator,
                  device=dev, guidance=guidance, codes=codes.expand(n, -1, -1), hidden=hidden.expand(n, -1, -1)).cpu()
    edits = decode(vqvae, edited)
    cells = torch.cat([picture[None], decode(vqvae, codes), edits])
    record = {
        "prior_path": str(prior_path.resolve()), "prior_sha256": file_sha256(prior_path),
        "vqvae_path": str(vq_path.resolve()), "num_codes": prior.cfg.num_codes, "code_depth": 1, "levels": 1,
        "latent_shape": list(prior.cfg.latent_shape), "label_names": meta.get("label_names"),
        "labels_requested": None if label is None else labels.tolist(), "temperature": temperature,
        "top_k": opts.top_k, "guidance": guidance, "seed": opts.seed, "sampler": "masked", **draw.keywords,
        "image": vq_meta["image"], "dataset": meta.get("dataset"),
        "edited_image": image, "box": list(pixels), "codes_redrawn": int(hidden.sum()),
    }
    maps = {"codes": edited, "original_codes": codes, "hidden": hidden[None].int()}
    with staged_folder(out) as folder:
        save_samples(folder, edits, (cells, len(cells)), maps, None, record)
        save_png(picture, folder / "original.png")
    return {**record, "count": n, "grid": str(out / "grid.png"), "out": str(out)}
