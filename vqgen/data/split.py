"""The train/validation split, with its own seed, and digests of what a split and a folder contain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vqgen.errors import VQGenError


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over 0..total-1 (so class-sorted data shows every class)."""
    return [i * total // count for i in range(count)]


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split keeping each label's share; returns sorted (train, val) index lists."""
    generator = torch.Generator().manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    train, val = [], []
    for label in sorted(by_label):
        members = by_label[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = round(len(members) * val_fraction)
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    if not val and len(train) > 1:
        val.append(train.pop(int(torch.randint(len(train), (1,), generator=generator))))
    if not train or not val:
        raise VQGenError(f"too few images ({len(labels)}) to make a train and a validation split")
    return sorted(train), sorted(val)


def split_digest(train: list[int], val: list[int]) -> str:
    """sha256 of the two index lists: equal digests, equal splits."""
    return _sha256(json.dumps({"train": train, "val": val}, separators=(",", ":")))


def files_digest(root: Path, files: list[Path]) -> str:
    """sha256 of the files' sorted paths relative to ``root`` (names only, not contents)."""
    return _sha256("\n".join(sorted(p.relative_to(root).as_posix() for p in files)))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def contents_mismatch(recorded: dict[str, Any], found: dict[str, Any]) -> str | None:
    """Why the data found now is not the data a checkpoint recorded (both ``spec["contents"]``); None if it is."""
    name = found["data"]
    advice = "restore it, or retrain on the data as it is now"
    if "num_files" in recorded:
        was, now = recorded["num_files"], found.get("num_files")
        if was != now:
            change = f"{abs(now - was)} file{'s' if abs(now - was) != 1 else ''} {'added' if now > was else 'removed'}"
            return f"{name}: {change} since the VQ-VAE was trained (recorded {was} files, found {now}); {advice}"
        if recorded.get("files_sha256") != found.get("files_sha256"):
            return (
                f"{name}: files renamed, moved or replaced since the VQ-VAE was trained "
                f"(still {now} files, but not the recorded names); {advice}"
            )
    if recorded.get("num_images", found.get("num_images")) != found.get("num_images"):
        return (
            f"{name}: {found.get('num_images')} images, but the VQ-VAE was trained when it had "
            f"{recorded['num_images']}; {advice}"
        )
    if recorded.get("split_sha256") != found["split_sha256"]:
        return (
            f"{name}: the train/val split made now differs from the one the VQ-VAE was trained on "
            "(same images, other split: was it made by another vqgen version?); retrain to be sure"
        )
    return None
