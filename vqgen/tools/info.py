"""What a vqgen file holds: its kind, metadata, tensors, size and checksum, without loading the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vqgen.formats.files import file_sha256, kind_name, read_metadata

MAX_TENSOR_ROWS = 40
MAX_LIST_ITEMS = 12


def describe(path: str | Path) -> dict[str, Any]:
    """Everything ``vqgen info`` shows, as a JSON-able dict (tensor shapes come from the header only)."""
    from safetensors import safe_open

    path = Path(path)
    meta = read_metadata(path)  # raises the one-line error for missing, foreign or damaged files
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            piece = f.get_slice(name)
            tensors[name] = {"shape": list(piece.get_shape()), "dtype": piece.get_dtype()}
    numel = sum(_prod(t["shape"]) for t in tensors.values())
    return {
        "path": str(path),
        "kind": meta.get("kind"),
        "description": kind_name(meta),
        "file_size": path.stat().st_size,
        "sha256": file_sha256(path),
        "num_tensors": len(tensors),
        "num_elements": numel,
        "metadata": meta,
        "tensors": tensors,
    }


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def show_value(value: Any) -> str:
    """Compact text for a metadata value: numbers rounded, long lists shortened, dicts as key=value."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={show_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        shown = ", ".join(show_value(v) for v in value[:MAX_LIST_ITEMS])
        more = f", ... ({len(value)} in all)" if len(value) > MAX_LIST_ITEMS else ""
        return f"[{shown}{more}]"
    return "null" if value is None else str(value)


# shown first, in this order; every other metadata key follows alphabetically
LEADING_KEYS = ("kind", "format_version", "vqgen_version", "epoch", "config", "dataset", "label_names", "image",
                "latent_shape", "num_codes", "metrics")


def cell(value: Any, depth: int = 0):
    """A table cell: nested dicts become borderless key/value tables (two levels deep), the rest text."""
    from rich.table import Table
    from rich.text import Text

    if not (isinstance(value, dict) and value and depth < 2):
        return Text(show_value(value))  # Text, not markup: "[a, b]" must not read as a style tag
    inner = Table(show_header=False, box=None, pad_edge=False)
    inner.add_column(style="dim", no_wrap=True)
    inner.add_column(overflow="fold")
    for k, v in value.items():
        inner.add_row(str(k), cell(v, depth + 1))
    return inner


def render(info: dict[str, Any]):
    """A rich renderable: a key/value table of the file and its metadata, then one of its tensors."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    meta = info["metadata"]
    summary = Table(title=Text(f"{info['path']}: {info['description']}"), show_header=False, title_justify="left")
    summary.add_column(style="bold cyan", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("file size", f"{human_size(info['file_size'])} ({info['file_size']} bytes)")
    summary.add_row("sha256", info["sha256"])
    keys = [k for k in LEADING_KEYS if k in meta] + sorted(k for k in meta if k not in LEADING_KEYS)
    for key in keys:
        summary.add_row(key, cell(meta[key]))

    tensors = Table(title=f"{info['num_tensors']} tensors, {info['num_elements']:,} values", title_justify="left")
    for column in ("name", "shape", "dtype"):
        tensors.add_column(column, justify="right" if column == "shape" else "left")
    items = list(info["tensors"].items())
    for name, t in items[:MAX_TENSOR_ROWS]:
        tensors.add_row(Text(name), "x".join(map(str, t["shape"])) or "scalar", t["dtype"])
    if len(items) > MAX_TENSOR_ROWS:
        tensors.add_row(f"... {len(items) - MAX_TENSOR_ROWS} more (--json lists all)", "", "")
    return Group(summary, tensors)


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2)
