"""The sections of `vqgen evaluate`: reconstruction, prior and samples, each a dict of numbers.

The samples are compared with a reference set R of real images; the floor compares a disjoint
real set A, as large as the sample set (at most half the split), with the same R, so both
numbers carry the same small-sample bias.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.formats.files import file_sha256
from vqgen.data import ImageData
from vqgen.errors import VQGenError
from vqgen.eval.features import FeatureNet, features_of
from vqgen.eval.inputs import EvaluateRequest, Metas
from vqgen.formats.codes import load_split
from vqgen.formats.samples import load_sample_images
from vqgen.eval.metrics import frechet_distance_features, kernel_inception_distance, precision_recall, ssim_per_image
from vqgen.measures import histogram_bits, nats_to_bits, reconstruction_numbers
from vqgen.data.batches import make_loader
from vqgen.logs import progress
from vqgen.stages.extract_codes import encode_split
from vqgen.stages.sample import resolve_vqvae_path
from vqgen.models.masked import EVAL_MASK_RATIO
from vqgen.sampling import is_masked
from vqgen.train.prior import evaluate_masked_prior, evaluate_prior_levels
from vqgen.models.rvq import flat_codes

PR_NEIGHBOURS = 3  # k of the k-NN manifolds of precision and recall (Kynkäänniemi et al. 2019)


def distances(
    fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], req: EvaluateRequest, generator: torch.Generator
) -> dict[str, float]:
    """Fréchet distance and KID per feature network.

    Keys: classifier -> fd, kid_mean, kid_std; inception -> fd_torchvision_inception, kid_torchvision_inception_mean,
    kid_torchvision_inception_std.
    """
    out: dict[str, float] = {}
    for name, f in fake.items():
        fd_key, kid_key = ("fd", "kid") if name == "classifier" else ("fd_torchvision_inception", "kid_torchvision_inception")
        out[fd_key] = frechet_distance_features(f, real[name])
        mean, std = kernel_inception_distance(f, real[name], req.kid_subsets, req.kid_subset_size, generator)
        out[f"{kid_key}_mean"], out[f"{kid_key}_std"] = mean, std
    return out


# ----------------------------------------------------------------------------- reconstruction


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
    ssim_sum = torch.zeros((), dtype=torch.float64)
    fake: dict[str, list[torch.Tensor]] = {name: [] for name in nets}

    def measure(images: torch.Tensor, recon: torch.Tensor) -> None:
        nonlocal ssim_sum
        ssim_sum += ssim_per_image(recon, images).double().sum().cpu()
        for name, value in features_of(recon, nets).items():
            fake[name].append(value)

    loader = make_loader(split, req.batch_size, shuffle=False, seed=0)
    numbers = reconstruction_numbers(model, progress(loader, len(loader), "reconstructing"), device, measure)
    keys = ("perplexity", "codes_used", "num_codes", "usage", "dead_codes")
    prefixes = ("", "top_") if model.levels == 2 else ("",)
    result = {
        "mse": numbers["mse"],
        "psnr": numbers["psnr"],
        "ssim": float(ssim_sum) / len(split),
        **{prefix + k: numbers[prefix + k] for prefix in prefixes for k in keys},
    }
    fake_t = {name: torch.cat(v) for name, v in fake.items()}
    result.update(distances(fake_t, real, req, generator))
    if len(split) // 2 > PR_NEIGHBOURS:
        result.update(reconstruction_coverage(fake_t["classifier"], real["classifier"], req.seed))
    return result


def reconstruction_coverage(fake: torch.Tensor, real: torch.Tensor, seed: int) -> dict[str, float]:
    """Precision and recall of the reconstructions of a random half of the images against the other half's
    real images, beside the same for the real images of the first half (the floor). A prior's samples decode
    through the same decoder, so the reconstructions' recall is about the most their samples can reach.
    (Each reconstruction is compared with other images, not its own original, as samples are.)"""
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))  # apart from KID's subsets
    held, reference = order[: len(real) // 2], order[len(real) // 2 :]
    precision, recall = precision_recall(real[reference], fake[held], k=PR_NEIGHBOURS)
    floor_precision, floor_recall = precision_recall(real[reference], real[held], k=PR_NEIGHBOURS)
    return {"precision": precision, "recall": recall, "floor_precision": floor_precision,
            "floor_recall": floor_recall, "pr_neighbours": PR_NEIGHBOURS}


# ----------------------------------------------------------------------------- prior


def prior_metrics_from_codes(req: EvaluateRequest, metas: Metas, device: torch.device) -> dict[str, Any]:
    dataset = load_split(req.codes, req.split)
    train = load_split(req.codes, "train")
    source = f"{req.split} codes of {req.codes}"
    return prior_metrics(req, metas["prior"], dataset, train, source, device)


def prior_metrics_from_images(
    req: EvaluateRequest, metas: Metas, data: ImageData, device: torch.device
) -> dict[str, Any]:
    """No code file given: encode the split (and the train split, for the histogram) with the prior's VQ-VAE."""
    vq_path = resolve_vqvae_path(req.prior, metas["prior"], req.vqvae)
    if file_sha256(vq_path) != metas["prior"].get("vqvae_sha256"):
        raise VQGenError(
            f"{vq_path}: not the VQ-VAE whose codes trained {req.prior}; pass --codes with that prior's code file"
        )
    vqvae, _ = load_vqvae(vq_path, device)

    def encoded(split: Dataset, what: str) -> TensorDataset:
        maps, labels, _ = encode_split(vqvae, split, req.batch_size, device, f"encoding the {what} split")
        maps = {name: flat_codes(m.long()) for name, m in maps.items()}  # residual VQ stacks: as the prior sees them
        return TensorDataset(maps["codes"], labels, *[m for name, m in maps.items() if name != "codes"])

    dataset = encoded(data.pick(req.split), req.split)
    train = dataset if req.split == "train" else encoded(data.train, "train")
    source = f"{req.split} split encoded with {vq_path}"
    return prior_metrics(req, metas["prior"], dataset, train, source, device)


def prior_metrics(
    req: EvaluateRequest,
    prior_meta: dict[str, Any],
    dataset: TensorDataset,
    train: TensorDataset,
    source: str,
    device: torch.device,
) -> dict[str, Any]:
    """NLL of held-out code maps (nats and bits per code, bits per image dimension), and what the prior gains
    over the histogram of the training codes. Two levels: per code of both maps together, per image both
    maps' bits, and each level's bits per code as ``top_``/``bottom_bits_per_code``."""
    if len(dataset) == 0:
        raise VQGenError(f"{source}: no code maps to evaluate the prior on")
    model, _ = load_prior(req.prior, device)
    if model.conditional and bool((dataset.tensors[1] < 0).any()):
        raise VQGenError(f"{req.prior}: a class-conditional prior, but {source} has unlabelled code maps")
    if getattr(model, "levels", 1) != (2 if len(dataset.tensors) == 3 else 1):
        raise VQGenError(f"{req.prior}: its levels differ from those of the code maps of {source}")
    if is_masked(model):
        return masked_prior_metrics(model, dataset, source, req.batch_size, device)
    nats = evaluate_prior_levels(model, DataLoader(dataset, batch_size=req.batch_size), device)
    codes_per_image = sum(t[0].numel() for t in dataset.tensors if t.dim() == 3)  # every map's codes
    scores = prior_scores(nats["nll"], codes_per_image, prior_meta["image"])
    overall, baseline = histogram_bits(train, dataset, model.cfg.num_codes)
    levels = {f"{level}_bits_per_code": nats_to_bits(nats[f"{level}_nll"]) for level in baseline}
    levels.update({f"{level}_histogram_bits_per_code": bits for level, bits in baseline.items()})
    return {
        **scores,
        "histogram_bits_per_code": overall,
        "learned_structure_bits_per_code": overall - scores["bits_per_code"],
        **levels,
        "num_code_maps": len(dataset),
        "source": source,
    }


def masked_prior_metrics(model: torch.nn.Module, dataset: TensorDataset, source: str, batch_size: int,
                         device: torch.device) -> dict[str, Any]:
    """A masked prior gives no likelihood of whole maps, so no bits per code: the NLL of hidden codes given the
    others, a share ``EVAL_MASK_RATIO`` of each map hidden (positions from a fixed seed)."""
    nats = evaluate_masked_prior(model, DataLoader(dataset, batch_size=batch_size), device)
    return {"masked_nll_nats_per_code": nats, "mask_ratio": EVAL_MASK_RATIO, "num_code_maps": len(dataset),
            "source": source}


def prior_scores(nats_per_code: float, codes_per_image: int, image: dict[str, Any]) -> dict[str, float]:
    bits = nats_to_bits(nats_per_code)
    dims = image["size"][0] * image["size"][1] * image["channels"]
    return {
        "nll_nats_per_code": nats_per_code,
        "bits_per_code": bits,
        "bits_per_image": bits * codes_per_image,
        "bits_per_dim": bits * codes_per_image / dims,
    }


# ----------------------------------------------------------------------------- samples


@torch.no_grad()
def sample_metrics(
    req: EvaluateRequest,
    metas: Metas,
    data: ImageData,
    nets: dict[str, FeatureNet],
    classifier,
    classifier_info: dict[str, Any],
    real: dict[str, torch.Tensor],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, Any]:
    """Every sample of the folder against the real reference set R, beside the real-vs-real floor (A vs R)."""
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
    with_pr = min(len(images), floor_size, len(reference)) > PR_NEIGHBOURS  # k-NN radii need k + 1 points
    result.update(set_scores(fake_t, reference_t, req, generator, with_pr))
    floor = set_scores({name: real[name][held] for name in nets}, reference_t, req, generator, with_pr)
    result.update({f"floor_{k}": v for k, v in floor.items()})
    if with_pr:
        result["pr_neighbours"] = PR_NEIGHBOURS
    if classifier_info["task"] == "labels":
        record = metas.get("samples")
        result.update(
            class_metrics(torch.cat(probs), real["probs"][held], indices, record, classifier_info["label_names"])
        )
    return result


def set_scores(
    fake: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    req: EvaluateRequest,
    generator: torch.Generator,
    with_pr: bool,
) -> dict[str, float]:
    """FD and KID per network, and (``with_pr``) precision and recall in the classifier's features."""
    scores = distances(fake, reference, req, generator)
    if with_pr:
        scores["precision"], scores["recall"] = precision_recall(
            reference["classifier"], fake["classifier"], k=PR_NEIGHBOURS
        )
    return scores


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
