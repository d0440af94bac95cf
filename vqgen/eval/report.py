"""The report of `vqgen evaluate`: a table for the terminal and JSON (NaN/inf written as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vqgen.formats.files import atomic_write_text


def finite_json(value: Any) -> Any:
    """Replace NaN/inf by None so the result is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(finite_json(results), indent=2) + "\n")


# keys of results written before the torchvision Inception numbers were renamed (they were called "standard FID",
# inviting comparison with published FIDs, which use another network and resize)
LEGACY_KEYS = {"standard_fid": "torchvision_inception", "fid_inception": "fd_torchvision_inception",
               "kid_inception": "kid_torchvision_inception"}


def with_current_keys(results: Any) -> Any:
    """Results JSON with the keys of older vqgen versions renamed to today's (``LEGACY_KEYS``)."""
    if not isinstance(results, dict):
        return results
    renamed = {}
    for key, value in results.items():
        for old, new in LEGACY_KEYS.items():
            if new not in key:
                key = key.replace(old, new)
        renamed[key] = with_current_keys(value)
    return renamed


def results_table(results: dict[str, Any]):
    """A rich table of the results (sections as row groups; floors and references in the last column); results
    JSON written by older versions is read too."""
    from rich.table import Table

    results = with_current_keys(results)
    n = results.get("num_images")
    title = f"vqgen evaluate ({results['split']} split" + (f", {n} images)" if n else ")")
    table = Table(title=title)
    table.add_column("section")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("reference", style="dim")

    def kid(d: dict[str, Any], prefix: str = "", key: str = "kid") -> str:
        return f"{d[f'{prefix}{key}_mean']:.4f} ± {d[f'{prefix}{key}_std']:.4f}"

    if "reconstruction" in results:
        r = results["reconstruction"]
        rows = [
            ("MSE", f"{r['mse']:.5f}", "images in [0, 1]"),
            ("PSNR", f"{r['psnr']:.2f} dB", "per image, averaged"),
            ("SSIM", f"{r['ssim']:.4f}", "1 = identical"),
            ("codes used", f"{r['codes_used']}/{r['num_codes']} ({r['usage']:.1%})", ""),
            ("perplexity", f"{r['perplexity']:.1f}", f"max {r['num_codes']}"),
            *([("top codes used", f"{r['top_codes_used']}/{r['top_num_codes']} ({r['top_usage']:.1%})", ""),
               ("top perplexity", f"{r['top_perplexity']:.1f}", "the top map of two levels")]
              if "top_perplexity" in r else []),
            ("FD recon vs real", f"{r['fd']:.3f}", "0 = perfect"),
            ("KID recon vs real", kid(r), ""),
        ]
        if "recall" in r:
            rows += [
                ("precision", f"{r['precision']:.3f}",
                 f"real vs real {r['floor_precision']:.3f} (half vs other half, {r['pr_neighbours']}-NN balls)"),
                ("recall", f"{r['recall']:.3f}", f"real vs real {r['floor_recall']:.3f}; about the most samples reach"),
            ]
        if "fd_torchvision_inception" in r:
            rows.append(("FD (tv Inception) recon", f"{r['fd_torchvision_inception']:.3f}", "not the reference FID"))
        add_section(table, "reconstruction", rows)
    if "codes" in results:
        c = results["codes"]
        add_section(table, "codes", [
            ("codes used", f"{c['codes_used']}/{c['num_codes']} ({c['usage']:.1%})", ""),
            ("perplexity", f"{c['perplexity']:.1f}", f"max {c['num_codes']}"),
        ])
    if "prior" in results and "masked_nll_nats_per_code" in results["prior"]:
        p = results["prior"]
        add_section(table, "prior (masked)", [
            ("hidden-code NLL", f"{p['masked_nll_nats_per_code']:.4f} nats/code",
             f"{p['mask_ratio']:.0%} of each map hidden; {p['num_code_maps']} code maps"),
            ("bits/code", "not defined", "a masked prior gives no likelihood of whole maps"),
        ])
    elif "prior" in results:
        p = results["prior"]
        add_section(table, "prior", [
            ("NLL", f"{p['nll_nats_per_code']:.4f} nats/code", f"{p['num_code_maps']} code maps"),
            ("bits/code", f"{p['bits_per_code']:.4f}", "both maps" if "top_bits_per_code" in p else ""),
            *([("bits/code top, bottom", f"{p['top_bits_per_code']:.4f}, {p['bottom_bits_per_code']:.4f}", "")]
              if "top_bits_per_code" in p else []),
            ("bits/image", f"{p['bits_per_image']:.1f}", ""),
            ("bits/dim", f"{p['bits_per_dim']:.4f}", "prior bits / (H·W·C)"),
            ("histogram bits/code", f"{p['histogram_bits_per_code']:.4f}", "train-code histogram, add-one"),
            ("learned structure", f"{p['learned_structure_bits_per_code']:.4f} bits/code", "histogram - prior"),
        ])
    if "samples" in results:
        s = results["samples"]
        rows = [
            ("FD vs real", f"{s['fd']:.3f}", f"real-vs-real floor {s['floor_fd']:.3f}"),
            ("KID vs real", kid(s), f"floor {kid(s, 'floor_')}"),
        ]
        if "precision" in s:
            k = s["pr_neighbours"]
            rows += [
                ("precision", f"{s['precision']:.3f}", f"real vs real {s['floor_precision']:.3f} ({k}-NN balls)"),
                ("recall", f"{s['recall']:.3f}", f"real vs real {s['floor_recall']:.3f}"),
            ]
        if "fd_torchvision_inception" in s:
            rows.append(("FD (tv Inception)", f"{s['fd_torchvision_inception']:.3f}",
                         f"floor {s['floor_fd_torchvision_inception']:.3f}; not the reference FID"))
        if "confidence" in s:
            rows += [
                ("classifier confidence", f"{s['confidence']:.3f}", f"real {s['real_confidence']:.3f}"),
                ("class entropy (norm.)", f"{s['class_entropy']:.3f}", f"real {s['real_class_entropy']:.3f}"),
            ]
        if "class_agreement" in s:
            rows.append(("in the asked class", f"{s['class_agreement']:.1%}", ""))
        add_section(table, f"samples ({s['count']})", rows)
    if "classifier" in results:
        c = results["classifier"]
        task = "classes" if c["task"] == "labels" else "self-supervised transforms"
        add_section(table, "feature network", [
            ("val accuracy", f"{c['val_accuracy']:.2%}", f"{task}, {Path(c['path']).name}"),
        ])
    inception = results.get("torchvision_inception")
    if inception and not inception["computed"]:
        table.add_section()
        table.add_row("tv Inception FD", "not computed", "", "no --inception-weights")
    return table


def add_section(table, name: str, rows: list[tuple[str, str, str]]) -> None:
    table.add_section()
    for i, (metric, value, reference) in enumerate(rows):
        table.add_row(name if i == 0 else "", metric, value, reference)
