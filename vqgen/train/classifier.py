"""The reference classifier behind `vqgen evaluate` (`vqgen train-classifier`): trained on a dataset's train split.

Labelled data trains an ordinary classifier. Unlabelled data (a folder without class
subfolders) trains the same network on a self-supervised task instead: predict which of four
fixed transforms (rotations by 0/90/180/270 degrees; flips for non-square images) was applied.
Either way its penultimate features are the space in which `evaluate` compares image sets.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vqgen.data.batches import make_loader
from vqgen.formats.checkpoints import image_record, save_classifier
from vqgen.formats.files import read_metadata
from vqgen.config import ClassifierTrainOptions, to_dict
from vqgen.data import ImageData
from vqgen.logs import say
from vqgen.models.classifier import Classifier, ClassifierConfig
from vqgen.train.loop import StepResult, Trainer, fit, prepare_run

SQUARE_TRANSFORMS = ["rotate 0", "rotate 90", "rotate 180", "rotate 270"]
NON_SQUARE_TRANSFORMS = ["identity", "flip left-right", "flip up-down", "rotate 180"]
# keys of a dataset spec that decide which images (and which split) a classifier has seen
SPEC_KEYS = ("data", "resolved_image_size", "resolved_channels", "num_files", "split_seed", "val_fraction")


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
    """checkpoints/classifier-<dataset>-<C>x<H>x<W>.safetensors: where evaluate caches it."""
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


class ClassifierTrainer(Trainer):
    stage, what = "classifier", "the classifier loss"

    def __init__(self, data: ImageData, opts: ClassifierTrainOptions, device: torch.device, out: Path):
        self.data, self.opts, self.device, self.out = data, opts, device, out
        self.task = classifier_task(data)
        self.class_names = data.label_names if self.task == "labels" else transform_names(data.image_size)
        self.cfg = ClassifierConfig(in_channels=data.channels, image_size=data.image_size,
                                    num_classes=len(self.class_names), width=opts.width)
        self.model = Classifier(self.cfg).to(device)
        self.train_batches = make_loader(data.train, opts.batch_size, shuffle=True, seed=opts.seed,
                                         num_workers=opts.num_workers, drop_last=True, max_shift=opts.augment_shift)
        self.hooks = {}
        self.started = time.time()

    def run_identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "data": self.data.spec, "options": to_dict(self.opts)}

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        images, labels = batch
        if self.task == "transforms":
            images, labels = transformed_batch(images, None)  # the global RNG: restored on resume
        loss = F.cross_entropy(net(images.to(self.device)), torch.as_tensor(labels).to(self.device))
        return StepResult(loss, {"loss": loss.detach()})

    def evaluate(self) -> dict[str, float]:
        return {"accuracy": classifier_accuracy(self.model, self.data.val, self.task, self.opts.batch_size, self.device)}

    def report(self, m: dict[str, Any]) -> None:
        say(f"classifier epoch {m['epoch']}/{self.opts.epochs}: loss {m['train_loss']:.4f}, "
            f"val accuracy {m['val_accuracy']:.2%} ({m['elapsed_s']:.0f}s)")

    def save(self, metrics: dict[str, Any], last: bool) -> None:
        """The classifier file, once: its feature statistics are those of the final weights."""
        if not last:
            return
        self.model.set_feature_statistics(raw_features(self.model, self.data.train, self.opts.batch_size, self.device))
        self.meta = save_classifier(self.out, self.model, {
            "task": self.task,
            "class_names": self.class_names,
            "label_names": self.data.label_names if self.task == "labels" else None,
            "val_accuracy": metrics["val_accuracy"],
            "dataset": self.data.spec,
            "image": image_record(self.data.channels, self.data.image_size),
            "train_options": to_dict(self.opts),
            "epochs": self.opts.epochs,
            "steps": metrics["step"],
            "train_seconds": round(time.time() - self.started, 1),
        })


def train_classifier(data: ImageData, opts: ClassifierTrainOptions, out: Path,
                     resume: str | Path | None = None) -> dict[str, Any]:
    """Train on ``data.train``, measure accuracy on ``data.val``, save to ``out``; returns the file's metadata.

    Small datasets get more epochs than ``opts.epochs``, so that at least ``opts.min_steps`` steps are taken.
    """
    opts.validate()  # the classifier's stage boundary (train-classifier, evaluate --train-classifier)
    device = prepare_run(opts, out)
    trainer = ClassifierTrainer(data, opts, device, Path(out))
    steps_per_epoch = len(trainer.train_batches)
    epochs = max(opts.epochs, math.ceil(opts.min_steps / max(1, steps_per_epoch)))
    warmup = min(opts.warmup_steps, max(1, epochs * steps_per_epoch // 10))
    if warmup < opts.warmup_steps:
        say(f"--warmup-steps {opts.warmup_steps} capped at {warmup}, a tenth of the {epochs * steps_per_epoch} steps")
    trainer.opts = opts = replace(opts, epochs=epochs, warmup_steps=warmup)
    fit(trainer, opts, Path(out), resume, curves=False)
    return read_metadata(out)


@torch.no_grad()
def raw_features(model: Classifier, dataset: Dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """Penultimate activations of a whole split, for the feature statistics."""
    model.eval()
    batches = make_loader(dataset, max(batch_size, 256), shuffle=False, seed=0)
    return torch.cat([model.raw_features(x.to(device)).cpu() for x, _ in batches])


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
