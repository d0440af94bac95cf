"""Training curves: metrics.jsonl (one JSON object per epoch) -> one PNG of small line charts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vqgen.formats.files import check_output_path
from vqgen.errors import VQGenError
from vqgen.tools.draw import line_chart, save_image, stack

# (panel title, [(legend name, metrics key)]); panels whose keys are all absent are left out
VQVAE_PANELS = [
    ("training loss", [("total", "train_loss"), ("recon mse", "train_recon_mse"), ("commitment", "train_commitment")]),
    ("validation PSNR (dB)", [("val psnr", "val_psnr")]),
    ("codebook: effective codes", [("perplexity", "val_perplexity"), ("codes used", "val_codes_used"),
                                   ("top perplexity", "val_top_perplexity")]),
]
PRIOR_PANELS = [
    ("NLL (bits per code)", [("train", "train_bits_per_code"), ("val", "val_bits_per_code"),
                             ("histogram only", "histogram_bits_per_code")]),
    ("masked prior: NLL of hidden codes (nats)", [("train", "train_masked_nll_nats"), ("val", "val_masked_nll_nats")]),
]
LR_PANEL = ("learning rate", [("lr", "lr")])
PANELS_PER_ROW = 3


def read_epochs(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a metrics log; after a resume the last record of each epoch wins."""
    path = Path(path)
    if not path.is_file():
        raise VQGenError(f"{path}: no such metrics log")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise VQGenError(f"{path}: not a metrics log (not text)") from e
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise VQGenError(f"{path}: line {number} is not JSON ({e.msg})") from e
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    if not by_epoch:
        raise VQGenError(f"{path}: no per-epoch records (expected JSON lines with an 'epoch' field)")
    return [by_epoch[e] for e in sorted(by_epoch)]


def panels_for(records: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    keys = {k for r in records for k, v in r.items() if is_number(v)}
    prior = {"val_bits_per_code", "train_nll_nats", "val_masked_nll_nats"}
    known = PRIOR_PANELS if keys & prior else VQVAE_PANELS
    panels = [(title, [(name, key) for name, key in series if key in keys]) for title, series in known]
    panels = [(title, series) for title, series in panels if series]
    used = {key for _, series in panels for _, key in series}
    # terms added by other training modes (e.g. the adversarial gan_* losses) get panels of their own
    for prefix, title in (("train_", "other training terms"), ("gan_", "adversarial training")):
        extra = sorted(k for k in keys - used if k.startswith(prefix) and not k.endswith("_nats"))
        if extra:
            panels.append((title, [(k.removeprefix(prefix), k) for k in extra[:5]]))
    if "lr" in keys:
        panels.append(LR_PANEL)
    return panels


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_curves(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Draw every known metric of ``metrics_path`` per epoch into ``png_path`` (written atomically)."""
    check_output_path(png_path)
    records = read_epochs(metrics_path)
    charts = []
    for title, series in panels_for(records):
        lines = []
        for name, key in series:
            points = [(r["epoch"], float(r[key])) for r in records if is_number(r.get(key))]
            lines.append((name, [x for x, _ in points], [y for _, y in points]))
        charts.append(line_chart(title, lines))
    rows = [stack(charts[i : i + PANELS_PER_ROW]) for i in range(0, len(charts), PANELS_PER_ROW)]
    save_image(stack(rows, horizontal=False), png_path)
    return Path(png_path)


def default_curves_path(metrics_path: Path) -> Path:
    """checkpoints/vqvae.metrics.jsonl -> checkpoints/vqvae.curves.png"""
    name = metrics_path.name
    stem = name.removesuffix(".metrics.jsonl") if name.endswith(".metrics.jsonl") else metrics_path.stem
    return metrics_path.with_name(f"{stem}.curves.png")


def metrics_log_for(path: Path) -> Path:
    """Accept a metrics log, or a checkpoint whose log lies beside it (vqvae.safetensors -> vqvae.metrics.jsonl)."""
    if path.suffix == ".safetensors":
        return path.with_name(f"{path.stem}.metrics.jsonl")
    return path
