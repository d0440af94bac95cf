"""The feature networks `vqgen evaluate` compares image sets in, and the features of the real images.

The reference classifier comes from --classifier PATH or from the cache beside the checkpoints;
evaluate trains one only when asked (--train-classifier), never as a side effect.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vqgen.formats.files import existing_file, not_safetensors_reason
from vqgen.data import TORCHVISION_DATASETS, ImageData
from vqgen.config import ClassifierTrainOptions
from vqgen.errors import VQGenError
from vqgen.formats.checkpoints import load_classifier
from vqgen.train.classifier import default_classifier_path, spec_mismatch, train_classifier
from vqgen.eval.inputs import EvaluateRequest, Metas
from vqgen.data.batches import make_loader
from vqgen.logs import progress

FeatureNet = Callable[[torch.Tensor], torch.Tensor]


def obtain_classifier(
    req: EvaluateRequest, metas: Metas, data: ImageData, device: torch.device, log: Callable[[str], None]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The given classifier, else the cached one beside the checkpoints; trained only with --train-classifier."""
    path = req.classifier or default_classifier_path(cache_folder(req, metas), data.spec)
    problem = "missing" if not path.is_file() else None
    if problem is None:
        try:
            model, meta = load_classifier(path, device)
        except VQGenError as e:
            if req.classifier is not None:
                raise  # the user's own file is never overwritten
            problem = str(e)  # a damaged or outdated cache
    if problem is None:
        reason = spec_mismatch(meta, data.spec)
        if req.classifier is not None:
            check_classifier_shape(path, meta, data)
            if reason:
                log(f"[yellow]warning: {path} may not fit this data: {reason}[/yellow]")
        elif reason:
            problem = reason
    if problem is not None:
        why = "no reference classifier" if problem == "missing" else f"the cached classifier does not fit ({problem})"
        if not req.train_classifier:
            command = train_classifier_command(data.spec, path, req.data_root)
            raise VQGenError(
                f"{path}: {why}; train it with `{command}`, or pass --train-classifier to let evaluate train it"
            )
        log(f"{why}: training one on the train split, saved to {path} for next time")
        opts = ClassifierTrainOptions(device=req.device, batch_size=min(128, req.batch_size))
        train_classifier(data, opts, path)
        model, meta = load_classifier(path, device)
    else:
        log(f"classifier: using {path} (val accuracy {meta['val_accuracy']:.2%})")
    info = {
        "path": str(path),
        "task": meta["task"],
        "val_accuracy": meta["val_accuracy"],
        "trained_now": problem is not None,
        "feature_dim": meta["config"]["feature_dim"],
        "label_names": meta.get("label_names"),
    }
    return model, info


def check_classifier_shape(path: Path, meta: dict[str, Any], data: ImageData) -> None:
    (h, w), c = meta["image"]["size"], meta["image"]["channels"]
    if (c, h, w) != (data.channels, *data.image_size):
        raise VQGenError(
            f"{path}: a classifier for {c}x{h}x{w} images, but the data is "
            f"{data.channels}x{data.image_size[0]}x{data.image_size[1]}"
        )


def train_classifier_command(spec: dict[str, Any], out: Path, data_root: Path) -> str:
    """The `vqgen train-classifier` command that trains a classifier fitting this data and split, into ``out``."""
    args = ["vqgen", "train-classifier", "--data", str(spec["data"])]
    if spec.get("image_size") is not None:
        size = spec["image_size"]
        args += ["--image-size", str(size if isinstance(size, int) else size[0])]
    if spec.get("channels") is not None:
        args += ["--channels", str(spec["channels"])]
    if spec["data"] in TORCHVISION_DATASETS:
        args += ["--data-root", str(data_root)]
    args += ["--val-fraction", str(spec["val_fraction"]), "--split-seed", str(spec["split_seed"])]
    return shlex.join([*args, "--out", str(out)])


def cache_folder(req: EvaluateRequest, metas: Metas) -> Path:
    """Beside the given checkpoints; for a samples folder alone, beside the prior that drew them."""
    for path in (req.vqvae, req.prior, req.codes):
        if path is not None:
            return path.parent
    prior_path = Path(metas.get("samples", {}).get("prior_path") or ".")
    if prior_path.is_file():
        return prior_path.parent
    assert req.samples is not None
    return req.samples.parent


def inception_feature_net(path: Path, device: torch.device) -> FeatureNet:
    """torchvision Inception-v3 from a safetensors state dict -> images in [0, 1] -> 2048-d pool features."""
    import torch.nn.functional as F
    import torchvision
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = existing_file(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VQGenError(f"{path}: {not_safetensors_reason(path)}") from e
    model = torchvision.models.inception_v3(
        weights=None, aux_logits="AuxLogits.fc.weight" in tensors, transform_input=True, init_weights=False
    )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise VQGenError(f"{path}: not a torchvision inception_v3 state dict ({first})") from e
    model.fc = torch.nn.Identity()
    model = model.to(device).eval()
    mean = torch.tensor([0.485, 0.456, 0.406], device=device)[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device=device)[None, :, None, None]

    def features(images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(32):
            x = chunk.expand(-1, 3, -1, -1) if chunk.shape[1] == 1 else chunk
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(model((x - mean) / std))
        return torch.cat(out)

    return features


@torch.no_grad()
def features_of(images: torch.Tensor, nets: dict[str, FeatureNet]) -> dict[str, torch.Tensor]:
    return {name: net(images).double().cpu() for name, net in nets.items()}


@torch.no_grad()
def real_features(
    split: Dataset, nets: dict[str, FeatureNet], classifier, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Features of every real image of the split for each network, plus the classifier's probabilities."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*nets, "probs"]}
    loader = make_loader(split, batch_size, shuffle=False, seed=0)
    for images, _ in progress(loader, len(loader), "features of real images"):
        images = images.to(device)
        for name, value in features_of(images, nets).items():
            parts[name].append(value)
        if classifier is not None:
            parts["probs"].append(classifier(images).softmax(1).double().cpu())
    return {name: torch.cat(values) for name, values in parts.items() if values}
