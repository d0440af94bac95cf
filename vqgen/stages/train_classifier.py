"""The reference classifier behind `vqgen evaluate`: trained on the dataset's train split, cached as a file.

Labelled data trains an ordinary classifier. Unlabelled data (a folder without class
subfolders) trains the same network on a self-supervised task instead: predict which of four
fixed transforms (rotations by 0/90/180/270 degrees; flips for non-square images) was applied.
Either way its penultimate features are the space in which `evaluate` compares image sets.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vqgen import __version__
from vqgen.checkpoint import load_vqgen_file, save_vqgen_file
from vqgen.data import ImageData
from vqgen.errors import VQGenError
from vqgen.models.classifier import Classifier, ClassifierConfig
from vqgen.runtime import check_finite, make_loader, progress, resolve_device, seed_everything, warmup_cosine

SQUARE_TRANSFORMS = ["rotate 0", "rotate 90", "rotate 180", "rotate 270"]
NON_SQUARE_TRANSFORMS = ["identity", "flip left-right", "flip up-down", "rotate 180"]
# keys of a dataset spec that decide which images (and which split) a classifier has seen
SPEC_KEYS = ("data", "resolved_image_size", "resolved_channels", "num_files", "split_seed", "val_fraction")


@dataclass
class ClassifierTrainOptions:
    epochs: int = 8
    min_steps: int = 200  # small datasets get more epochs, so that the features are trained at all
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 16
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.epochs < 1:
            raise VQGenError(f"--epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise VQGenError(f"--lr must be positive, not {self.lr}")
        if self.min_steps < 0:
            raise VQGenError(f"--min-steps must not be negative, not {self.min_steps}")
        if self.width < 1:
            raise VQGenError(f"--width must be positive, not {self.width}")


def classifier_task(data: ImageData) -> str:
    """'labels' when the data has at least two classes, else the self-supervised 'transforms' task."""
    return "labels" if data.num_classes >= 2 else "transforms"


def transform_names(image_size: tuple[int, int]) -> list[str]:
    return SQUARE_TRANSFORMS if image_size[0] == image_size[1] else NON_SQUARE_TRANSFORMS


def apply_transform(images: torch.Tensor, which: int) -> torch.Tensor:
    """Transform ``which`` (0..3) of the self-supervised task on a (B, C, H, W) batch."""
    if images.shape[-1] == images.shape[-2]:
        return torch.rot90(images, which, dims=(-2, -1))
    return [lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.flip(-2, -1)][which](images)


def transformed_batch(
    images: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a random transform to each image -> (images, transform index as the label)."""
    which = torch.randint(4, (images.shape[0],), generator=generator)
    out = images.clone()
    for t in range(4):
        chosen = (which == t).nonzero().flatten()
        if len(chosen):
            out[chosen] = apply_transform(images[chosen], t)
    return out, which


def default_classifier_path(folder: Path, spec: dict[str, Any]) -> Path:
    """checkpoints/classifier-<dataset>-<C>x<H>x<W>.safetensors: where evaluate looks for it."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(spec["data"])).name) or "data"
    h, w = spec["resolved_image_size"]
    return folder / f"classifier-{name}-{spec['resolved_channels']}x{h}x{w}.safetensors"


def spec_mismatch(meta: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """Why a classifier's recorded dataset differs from ``spec`` (None when it is the same data and split)."""
    trained = meta.get("dataset") or {}
    keys = SPEC_KEYS
    if spec.get("split") == "official train/test":  # fixed split: the seed does not matter
        keys = tuple(k for k in keys if k not in ("split_seed", "val_fraction"))
    for key in keys:
        if trained.get(key) != spec.get(key):
            return f"it was trained with {key}={trained.get(key)!r}, the data here has {spec.get(key)!r}"
    return None


def train_classifier(data: ImageData, opts: ClassifierTrainOptions, out: Path, log=None) -> dict[str, Any]:
    """Train on ``data.train``, measure accuracy on ``data.val``, save to ``out``; returns the metadata."""
    opts.validate()
    say = log or (lambda text: None)
    device = resolve_device(opts.device)
    seed_everything(opts.seed)
    task = classifier_task(data)
    class_names = data.label_names if task == "labels" else transform_names(data.image_size)
    cfg = ClassifierConfig(
        in_channels=data.channels, image_size=data.image_size, num_classes=len(class_names), width=opts.width
    )
    model = Classifier(cfg).to(device)
    train_images, train_labels = load_split(data.train, opts.batch_size)
    steps_per_epoch = max(1, len(train_images) // opts.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    epochs = max(opts.epochs, math.ceil(opts.min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    warmup = min(100, max(1, total_steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup))
    generator = torch.Generator().manual_seed(opts.seed)
    started = time.time()
    step = 0
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)[: steps_per_epoch * opts.batch_size]
        batches = order.split(opts.batch_size)
        for batch in progress(batches, len(batches), f"classifier epoch {epoch}/{epochs}"):
            images, labels = train_images[batch].float() / 255, train_labels[batch]
            if task == "transforms":
                images, labels = transformed_batch(images, generator)
            logits = model(images.to(device))
            loss = F.cross_entropy(logits, labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            check_finite(loss.item(), "the classifier loss", step)
        if epoch % max(1, epochs // 10) and epoch != epochs:
            continue  # on small data with many epochs, validate about ten times
        accuracy = classifier_accuracy(model, data.val, task, opts.batch_size, device)
        elapsed = time.time() - started
        say(f"classifier epoch {epoch}/{epochs}: loss {loss.item():.4f}, val accuracy {accuracy:.2%} ({elapsed:.0f}s)")
    model.set_feature_statistics(raw_features(model, train_images, opts.batch_size, device))
    meta = {
        "kind": "classifier",
        "vqgen_version": __version__,
        "config": cfg.to_dict(),
        "task": task,
        "class_names": class_names,
        "label_names": data.label_names if task == "labels" else None,
        "val_accuracy": accuracy,
        "dataset": data.spec,
        "image": {"channels": data.channels, "size": list(data.image_size), "pixel_range": [0, 1]},
        "train_options": asdict(opts),
        "epochs": epochs,
        "steps": step,
        "train_seconds": round(time.time() - started, 1),
    }
    save_vqgen_file(out, model.state_dict(), meta)
    return meta


@torch.no_grad()
def raw_features(model: Classifier, images_u8: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat([model.raw_features(x.to(device).float() / 255).cpu() for x in images_u8.split(batch_size)])


def load_split(dataset: Dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split in memory as uint8 (decoded once, not once per epoch; like the PNGs it is
    compared with, 8 bits per value)."""
    images, labels = [], []
    for x, y in make_loader(dataset, max(batch_size, 256), shuffle=False, seed=0):
        images.append((x * 255).round().to(torch.uint8))
        labels.append(torch.as_tensor(y, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


@torch.no_grad()
def classifier_accuracy(model: Classifier, dataset: Dataset, task: str, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy on a split (for the transform task: over all four transforms of every image)."""
    model.eval()
    correct, total = 0, 0
    for images, labels in make_loader(dataset, batch_size, shuffle=False, seed=0):
        images = images.to(device)
        if task == "labels":
            targets = torch.as_tensor(labels, device=device)
            correct += int((model(images).argmax(1) == targets).sum())
            total += len(targets)
            continue
        for t in range(4):
            correct += int((model(apply_transform(images, t)).argmax(1) == t).sum())
            total += images.shape[0]
    return correct / max(total, 1)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Load a classifier file -> (Classifier in eval mode, metadata)."""
    tensors, meta = load_vqgen_file(path, "classifier")
    model = Classifier(ClassifierConfig.from_dict(meta["config"]))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise VQGenError(f"{path}: weights do not match the recorded classifier configuration ({first})") from e
    return model.to(device).eval(), meta
