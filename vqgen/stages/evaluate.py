"""`vqgen evaluate`: reconstruction, prior and sample quality of whatever models are given, in one report.

* reconstruction (a VQ-VAE): MSE, PSNR, SSIM and codebook usage over a whole split, and the
  Fréchet distance / KID between reconstructions and originals;
* codes (a code file): the codebook audit recorded for the split;
* prior: NLL on held-out codes in nats and bits per code, and bits per image dimension;
* samples (a folder from `vqgen sample`): Fréchet distance and KID to the real images of the
  split, beside the real-vs-real floor, plus classifier confidence, class entropy and agreement.

Distances live in the penultimate-layer features of a small classifier trained on the dataset
(see train_classifier.py); with ``inception_weights`` also in torchvision Inception-v3 features.
The samples are compared with a reference set R of real images; the floor compares a disjoint
real set A, as large as the sample set (at most half the split), with the same R, so both
numbers carry the same small-sample bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vqgen.checkpoint import (
    _existing_file,
    _not_safetensors_reason,
    expect_kind,
    file_sha256,
    load_prior,
    load_vqgen_file,
    load_vqvae,
    read_metadata,
)
from vqgen.data import SPLITS, ImageData, image_data_from_spec, load_image_data, read_image
from vqgen.errors import VQGenError
from vqgen.metrics import (
    CodeHistogram,
    frechet_distance_features,
    kernel_inception_distance,
    nats_to_bits,
    psnr_per_image,
    ssim_per_image,
)
from vqgen.batches import make_loader
from vqgen.device import resolve_device
from vqgen.logs import progress

FeatureNet = Callable[[torch.Tensor], torch.Tensor]
NO_INCEPTION = (
    "standard FID not computed: pass --inception-weights PATH "
    "(torchvision inception_v3 weights saved as safetensors)"
)


@dataclass
class EvaluateRequest:
    vqvae: Path | None = None
    codes: Path | None = None
    prior: Path | None = None
    samples: Path | None = None
    data: str | None = None
    data_root: Path = Path("data")
    split: str = "val"
    classifier: Path | None = None
    inception_weights: Path | None = None
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000

    def validate(self) -> None:
        if not any((self.vqvae, self.codes, self.prior, self.samples)):
            raise VQGenError("nothing to evaluate: give at least one of --vqvae, --codes, --prior, --samples")
        if self.split not in SPLITS:
            raise VQGenError(f"--split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.batch_size < 1:
            raise VQGenError(f"--batch-size must be positive, not {self.batch_size}")
        if self.kid_subsets < 1:
            raise VQGenError(f"--kid-subsets must be positive, not {self.kid_subsets}")
        if self.samples is not None and not self.samples.is_dir():
            raise VQGenError(f"{self.samples}: no such folder of samples")


def evaluate(req: EvaluateRequest, log: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Evaluate everything ``req`` names; returns a JSON-able dict of results."""
    req.validate()
    device = resolve_device(req.device)
    metas = read_inputs(req)
    results: dict[str, Any] = {
        "split": req.split,
        "inputs": {k: str(getattr(req, k)) for k in ("vqvae", "codes", "prior", "samples") if getattr(req, k)},
    }
    generator = torch.Generator().manual_seed(req.seed)

    if req.codes is not None and req.split in metas["codes"].get("codebook_audit", {}):
        results["codes"] = metas["codes"]["codebook_audit"][req.split]

    needs_images = req.vqvae is not None or req.samples is not None or (req.prior is not None and req.codes is None)
    if not needs_images:
        if req.prior is not None:
            results["prior"] = prior_metrics_from_codes(req, metas, device)
        return finite_json(results)

    data = resolve_data(req, metas)
    split = data.pick(req.split)
    if len(split) < 4:
        raise VQGenError(f"the {req.split} split has only {len(split)} images; need at least 4 to compare image sets")
    results["dataset"] = data.spec
    results["num_images"] = len(split)

    nets: dict[str, FeatureNet] = {}
    classifier, classifier_info = None, {}
    compares_images = req.vqvae is not None or req.samples is not None
    results["standard_fid"] = {"computed": False, "reason": NO_INCEPTION}
    if compares_images and req.inception_weights is not None:
        inception = inception_feature_net(req.inception_weights, device)  # first: a bad file fails fast
        results["standard_fid"] = {
            "computed": True,
            "network": "torchvision inception_v3, 2048-d pool features, images resized to 299x299",
            "weights": str(req.inception_weights),
        }
    if compares_images:
        classifier, classifier_info = obtain_classifier(req, metas, data, device, log)
        results["classifier"] = classifier_info
        nets["classifier"] = classifier.features
        if results["standard_fid"]["computed"]:
            nets["inception"] = inception

    real = real_features(split, nets, classifier, req.batch_size, device) if nets else {}
    if req.vqvae is not None:
        results["reconstruction"] = reconstruction_metrics(req, split, nets, real, generator, device)
    if req.prior is not None:
        if req.codes is not None:
            results["prior"] = prior_metrics_from_codes(req, metas, device)
        else:
            results["prior"] = prior_metrics_from_images(req, metas, split, device)
    if req.samples is not None:
        results["samples"] = sample_metrics(
            req, metas, data, nets, classifier, classifier_info, real, generator, device
        )
    return finite_json(results)


# ----------------------------------------------------------------------------- inputs


def read_inputs(req: EvaluateRequest) -> dict[str, dict[str, Any]]:
    """Metadata of every given file, checked for kind and for belonging together."""
    metas: dict[str, dict[str, Any]] = {}
    for name in ("vqvae", "codes", "prior"):
        path = getattr(req, name)
        if path is not None:
            metas[name] = read_metadata(path)
            expect_kind(path, metas[name], name)
    if req.samples is not None:
        record = req.samples / "codes.safetensors"
        if record.is_file():
            metas["samples"] = read_metadata(record)
            expect_kind(record, metas["samples"], "samples")
    if "prior" in metas and "codes" in metas:
        if metas["codes"].get("vqvae_sha256") != metas["prior"].get("vqvae_sha256"):
            raise VQGenError(f"{req.codes}: these codes come from another VQ-VAE than the one {req.prior} was fit to")
    images = {
        name: (*m["image"]["size"], m["image"]["channels"]) for name, m in metas.items() if m.get("image")
    }
    if len(set(images.values())) > 1:
        shown = ", ".join(f"{name} {c}x{h}x{w}" for name, (h, w, c) in images.items())
        raise VQGenError(f"the given files disagree on the image shape ({shown})")
    return metas


def resolve_data(req: EvaluateRequest, metas: dict[str, dict[str, Any]]) -> ImageData:
    """The dataset recorded in the given files (--data overrides its name), at their image shape."""
    recorded = [m for m in metas.values() if m.get("dataset")]
    image = next((m["image"] for m in metas.values() if m.get("image")), None)
    if image is None and req.samples is not None:
        image = sample_folder_shape(req.samples)
    if recorded:
        spec = dict(recorded[0]["dataset"])
        if req.data is not None:
            spec["data"] = req.data
        if image is not None:
            spec["image_size"], spec["channels"] = image["size"][0], image["channels"]
        return image_data_from_spec(spec, root=req.data_root)
    if req.data is None:
        raise VQGenError("--data is needed: none of the given files records the dataset it came from")
    return load_image_data(
        req.data,
        image_size=image["size"][0] if image else None,
        channels=image["channels"] if image else None,
        root=req.data_root,
    )


def sample_png_files(folder: Path) -> list[tuple[int, Path]]:
    """The numbered PNGs `vqgen sample` writes (NNNN.png; grid.png and others are left out), in order."""
    files = [(int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit()]
    if not files:
        raise VQGenError(f"{folder}: no numbered sample images (NNNN.png) found")
    return sorted(files)


def sample_folder_shape(folder: Path) -> dict[str, Any]:
    from PIL import Image

    _, first = sample_png_files(folder)[0]
    with Image.open(first) as im:
        return {"size": [im.height, im.width], "channels": 1 if im.mode in ("1", "L", "LA", "I", "I;16") else 3}


def load_sample_images(folder: Path, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
    files = sample_png_files(folder)
    images = [read_image(path, channels) for _, path in files]
    for (_, path), image in zip(files, images):
        if tuple(image.shape[1:]) != tuple(size):
            h, w = image.shape[1:]
            raise VQGenError(f"{path}: a {h}x{w} image, but the data is {size[0]}x{size[1]}")
    return torch.stack(images), [index for index, _ in files]


# ----------------------------------------------------------------------------- feature networks


def obtain_classifier(
    req: EvaluateRequest,
    metas: dict[str, dict[str, Any]],
    data: ImageData,
    device: torch.device,
    log: Callable[[str], None],
):
    """The given classifier, else the cached one beside the checkpoints, else a freshly trained one."""
    from vqgen.checkpoint import load_classifier
    from vqgen.config import ClassifierTrainOptions
    from vqgen.train.classifier import default_classifier_path, spec_mismatch, train_classifier

    shape = {"channels": data.channels, "size": list(data.image_size)}
    trained_now = False
    if req.classifier is not None:
        path = req.classifier
        model, meta = load_classifier(path, device)
        if {k: meta["image"][k] for k in shape} != shape:
            (h, w), c = meta["image"]["size"], meta["image"]["channels"]
            raise VQGenError(
                f"{path}: a classifier for {c}x{h}x{w} images, but the data is "
                f"{data.channels}x{data.image_size[0]}x{data.image_size[1]}"
            )
        reason = spec_mismatch(meta, data.spec)
        if reason:
            log(f"[yellow]warning: {path} may not fit this data: {reason}[/yellow]")
    else:
        path = default_classifier_path(cache_folder(req, metas), data.spec)
        reason = "missing"
        if path.is_file():
            try:
                model, meta = load_classifier(path, device)
                reason = spec_mismatch(meta, data.spec)
            except VQGenError as e:  # a damaged or outdated cache is rebuilt, not fatal
                reason = str(e)
        if reason is None:
            log(f"classifier: using {path} (val accuracy {meta['val_accuracy']:.2%})")
        else:
            why = "no cached classifier" if reason == "missing" else f"the cached classifier does not fit ({reason})"
            log(f"{why}: training one on the train split, saved to {path} for next time")
            opts = ClassifierTrainOptions(device=req.device, batch_size=min(128, req.batch_size))
            train_classifier(data, opts, path)
            model, meta = load_classifier(path, device)
            trained_now = True
    info = {
        "path": str(path),
        "task": meta["task"],
        "val_accuracy": meta["val_accuracy"],
        "trained_now": trained_now,
        "feature_dim": meta["config"]["feature_dim"],
        "label_names": meta.get("label_names"),
    }
    return model, info


def cache_folder(req: EvaluateRequest, metas: dict[str, dict[str, Any]]) -> Path:
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

    path = _existing_file(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VQGenError(f"{path}: {_not_safetensors_reason(path)}") from e
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


def distances(
    fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], req: EvaluateRequest, generator: torch.Generator
) -> dict[str, float]:
    """Fréchet distance and KID per feature network.

    Keys: classifier -> fd, kid_mean, kid_std; inception -> fid_inception, kid_inception_mean, kid_inception_std.
    """
    out: dict[str, float] = {}
    for name, f in fake.items():
        fd_key, kid_key = ("fd", "kid") if name == "classifier" else ("fid_inception", "kid_inception")
        out[fd_key] = frechet_distance_features(f, real[name])
        mean, std = kernel_inception_distance(f, real[name], req.kid_subsets, req.kid_subset_size, generator)
        out[f"{kid_key}_mean"], out[f"{kid_key}_std"] = mean, std
    return out


# ----------------------------------------------------------------------------- the three sections


@torch.no_grad()
def reconstruction_metrics(
    req: EvaluateRequest,
    split: Dataset,
    nets: dict[str, FeatureNet],
    real: dict[str, torch.Tensor],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, Any]:
    model, _ = load_vqvae(req.vqvae, device)
    histogram = CodeHistogram(model.cfg.num_codes)
    sums = {"sq_err": 0.0, "psnr": 0.0, "ssim": 0.0, "pixels": 0, "images": 0}
    fake: dict[str, list[torch.Tensor]] = {name: [] for name in nets}
    loader = make_loader(split, req.batch_size, shuffle=False, seed=0)
    for images, _ in progress(loader, len(loader), "reconstructing"):
        images = images.to(device)
        recon_model_space, q = model(images)
        recon = model.from_model(recon_model_space.float())
        sums["sq_err"] += float((recon - images).double().pow(2).sum())
        sums["psnr"] += float(psnr_per_image(recon, images).double().sum())
        sums["ssim"] += float(ssim_per_image(recon, images).double().sum())
        sums["pixels"] += images.numel()
        sums["images"] += images.shape[0]
        histogram.add(q.indices.cpu())
        for name, value in features_of(recon, nets).items():
            fake[name].append(value)
    codebook = histogram.summary()
    result = {
        "mse": sums["sq_err"] / sums["pixels"],
        "psnr": sums["psnr"] / sums["images"],
        "ssim": sums["ssim"] / sums["images"],
        **{k: codebook[k] for k in ("perplexity", "codes_used", "num_codes", "usage", "dead_codes")},
    }
    result.update(distances({name: torch.cat(v) for name, v in fake.items()}, real, req, generator))
    return result


def prior_metrics_from_codes(
    req: EvaluateRequest, metas: dict[str, dict[str, Any]], device: torch.device
) -> dict[str, Any]:
    dataset = held_out_codes(req.codes, req.split)
    return prior_metrics(req, metas["prior"], dataset, f"{req.split} codes of {req.codes}", device)


def held_out_codes(path: Path, split: str) -> TensorDataset:
    """The (codes, labels) of one split of a code file (test and all only where extract-codes wrote them)."""
    from vqgen.train.prior import load_codes

    if split in ("train", "val"):
        codes = load_codes(path)
        return codes.train if split == "train" else codes.val
    tensors, meta = load_vqgen_file(path, "codes")
    if f"{split}_codes" not in tensors or f"{split}_labels" not in tensors:
        held = ", ".join(meta.get("codebook_audit", {}))
        raise VQGenError(f"{path}: the code file holds no {split} codes (only {held}); encode them with extract-codes")
    codes, labels = tensors[f"{split}_codes"].long(), tensors[f"{split}_labels"].long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= meta["num_codes"]):
        raise VQGenError(f"{path}: {split} codes lie outside 0..{meta['num_codes'] - 1}")
    return TensorDataset(codes, labels)


def prior_metrics_from_images(
    req: EvaluateRequest, metas: dict[str, dict[str, Any]], split: Dataset, device: torch.device
) -> dict[str, Any]:
    """No code file given: encode the split with the prior's own VQ-VAE first."""
    from vqgen.stages.extract_codes import encode_split
    from vqgen.stages.sample import resolve_vqvae_path

    vq_path = resolve_vqvae_path(req.prior, metas["prior"], req.vqvae)
    if file_sha256(vq_path) != metas["prior"].get("vqvae_sha256"):
        raise VQGenError(
            f"{vq_path}: not the VQ-VAE whose codes trained {req.prior}; pass --codes with that prior's code file"
        )
    vqvae, _ = load_vqvae(vq_path, device)
    codes, labels, _ = encode_split(vqvae, split, req.batch_size, device, f"encoding the {req.split} split")
    dataset = TensorDataset(codes.long(), labels)
    return prior_metrics(req, metas["prior"], dataset, f"{req.split} split encoded with {vq_path}", device)


def prior_metrics(
    req: EvaluateRequest, prior_meta: dict[str, Any], dataset: TensorDataset, source: str, device: torch.device
) -> dict[str, Any]:
    """NLL of held-out code maps: nats and bits per code, and bits per image dimension."""
    from vqgen.train.prior import evaluate_prior

    if len(dataset) == 0:
        raise VQGenError(f"{source}: no code maps to evaluate the prior on")
    model, _ = load_prior(req.prior, device)
    if model.conditional and bool((dataset.tensors[1] < 0).any()):
        raise VQGenError(f"{req.prior}: a class-conditional prior, but {source} has unlabelled code maps")
    nats = evaluate_prior(model, DataLoader(dataset, batch_size=req.batch_size), device)
    scores = prior_scores(nats, model.cfg.latent_shape, prior_meta["image"])
    return {**scores, "num_code_maps": len(dataset), "source": source}


def prior_scores(nats_per_code: float, latent_shape: tuple[int, int], image: dict[str, Any]) -> dict[str, float]:
    bits = nats_to_bits(nats_per_code)
    codes_per_image = latent_shape[0] * latent_shape[1]
    dims = image["size"][0] * image["size"][1] * image["channels"]
    return {
        "nll_nats_per_code": nats_per_code,
        "bits_per_code": bits,
        "bits_per_image": bits * codes_per_image,
        "bits_per_dim": bits * codes_per_image / dims,
    }


@torch.no_grad()
def sample_metrics(
    req: EvaluateRequest,
    metas: dict[str, dict[str, Any]],
    data: ImageData,
    nets: dict[str, FeatureNet],
    classifier,
    classifier_info: dict[str, Any],
    real: dict[str, torch.Tensor],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, Any]:
    images, indices = load_sample_images(req.samples, data.channels, data.image_size)
    if len(images) < 2:
        raise VQGenError(f"{req.samples}: only {len(images)} sample image; distances need at least 2")
    n_real = len(real["classifier"])
    floor_size = min(len(images), n_real // 2)
    order = torch.randperm(n_real, generator=generator)
    held, reference = order[:floor_size], order[floor_size:]
    fake = {name: [] for name in nets}
    probs = []
    for batch in images.split(req.batch_size):
        batch = batch.to(device)
        for name, value in features_of(batch, nets).items():
            fake[name].append(value)
        probs.append(classifier(batch).softmax(1).double().cpu())
    fake_t = {name: torch.cat(v) for name, v in fake.items()}
    reference_t = {name: real[name][reference] for name in nets}
    result: dict[str, Any] = {"count": len(images), "reference_count": len(reference), "floor_count": floor_size}
    result.update(distances(fake_t, reference_t, req, generator))
    floor = distances({name: real[name][held] for name in nets}, reference_t, req, generator)
    result.update({f"floor_{k}": v for k, v in floor.items()})
    if classifier_info["task"] == "labels":
        record = metas.get("samples")
        result.update(
            class_metrics(torch.cat(probs), real["probs"][held], indices, record, classifier_info["label_names"])
        )
    return result


def class_metrics(
    probs: torch.Tensor,
    real_probs: torch.Tensor,
    indices: list[int],
    record: dict[str, Any] | None,
    label_names: list[str] | None,
) -> dict[str, Any]:
    """Classifier confidence, normalised entropy of the predicted-class histogram, agreement with asked labels."""
    result = {
        "confidence": float(probs.max(1).values.mean()),
        "real_confidence": float(real_probs.max(1).values.mean()),
        "class_entropy": normalised_entropy(probs.argmax(1), probs.shape[1]),
        "real_class_entropy": normalised_entropy(real_probs.argmax(1), probs.shape[1]),
    }
    asked = (record or {}).get("labels_requested")
    if asked and (record or {}).get("label_names") == label_names and max(indices) < len(asked):
        wanted = torch.tensor([asked[i] for i in indices])
        result["class_agreement"] = float((probs.argmax(1) == wanted).double().mean())
    return result


def normalised_entropy(predictions: torch.Tensor, num_classes: int) -> float:
    """Entropy of the histogram of predicted classes / log(C): 1 = all classes equally often."""
    p = torch.bincount(predictions, minlength=num_classes).double()
    p = p / p.sum()
    entropy = -(p * p.clamp_min(1e-300).log()).sum()
    return max(0.0, float(entropy / math.log(num_classes))) if num_classes > 1 else 0.0


def finite_json(value: Any) -> Any:
    """Replace NaN/inf by None so the result is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------- report


def results_table(results: dict[str, Any]):
    """A rich table of the results (sections as row groups; floors and references in the last column)."""
    from rich.table import Table

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
            ("FD recon vs real", f"{r['fd']:.3f}", "0 = perfect"),
            ("KID recon vs real", kid(r), ""),
        ]
        if "fid_inception" in r:
            rows.append(("FID (Inception) recon", f"{r['fid_inception']:.3f}", ""))
        add_section(table, "reconstruction", rows)
    if "codes" in results:
        c = results["codes"]
        add_section(table, "codes", [
            ("codes used", f"{c['codes_used']}/{c['num_codes']} ({c['usage']:.1%})", ""),
            ("perplexity", f"{c['perplexity']:.1f}", f"max {c['num_codes']}"),
        ])
    if "prior" in results:
        p = results["prior"]
        add_section(table, "prior", [
            ("NLL", f"{p['nll_nats_per_code']:.4f} nats/code", f"{p['num_code_maps']} code maps"),
            ("bits/code", f"{p['bits_per_code']:.4f}", ""),
            ("bits/image", f"{p['bits_per_image']:.1f}", ""),
            ("bits/dim", f"{p['bits_per_dim']:.4f}", "prior bits / (H·W·C)"),
        ])
    if "samples" in results:
        s = results["samples"]
        rows = [
            ("FD vs real", f"{s['fd']:.3f}", f"real-vs-real floor {s['floor_fd']:.3f}"),
            ("KID vs real", kid(s), f"floor {kid(s, 'floor_')}"),
        ]
        if "fid_inception" in s:
            rows.append(("FID (Inception)", f"{s['fid_inception']:.3f}", f"floor {s['floor_fid_inception']:.3f}"))
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
    fid = results.get("standard_fid")
    if fid and not fid["computed"]:
        table.add_section()
        table.add_row("standard FID", "not computed", "", "no --inception-weights")
    return table


def add_section(table, name: str, rows: list[tuple[str, str, str]]) -> None:
    table.add_section()
    for i, (metric, value, reference) in enumerate(rows):
        table.add_row(name if i == 0 else "", metric, value, reference)
