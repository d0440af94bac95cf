"""`vqgen evaluate`: reconstruction, prior and sample quality of whatever models are given, in one report.

* reconstruction (a VQ-VAE): MSE, PSNR, SSIM and codebook usage over a whole split, and the
  Fréchet distance / KID between reconstructions and originals;
* codes (a code file): the codebook audit recorded for the split;
* prior: NLL on held-out codes in nats and bits per code, bits per image dimension, and the
  histogram-only baseline it is measured against; for a masked prior, which has no likelihood of whole
  maps, the NLL of hidden codes given the rest of the map at a fixed mask ratio instead;
* samples (a folder from `vqgen sample`): Fréchet distance, KID, precision and recall against the
  real images of the split, beside the real-vs-real floor, plus classifier confidence, class
  entropy and agreement.

Distances live in the penultimate-layer features of a small classifier trained on the dataset
(see features.py); with ``inception_weights`` also in torchvision Inception-v3 features (not the
reference FID network: its numbers are not comparable with published FIDs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vqgen.errors import VQGenError
from vqgen.eval.features import FeatureNet, inception_feature_net, obtain_classifier, real_features
from vqgen.eval.inputs import EvaluateRequest, read_inputs, resolve_data
from vqgen.eval.report import finite_json
from vqgen.eval.sections import (
    prior_metrics_from_codes,
    prior_metrics_from_images,
    reconstruction_metrics,
    sample_metrics,
)
from vqgen.device import resolve_device

NO_INCEPTION = (
    "torchvision Inception distances not computed: pass --inception-weights PATH "
    "(torchvision inception_v3 weights saved as safetensors)"
)
TORCHVISION_INCEPTION = ("torchvision inception_v3, 2048-d pool features, images resized to 299x299 (bilinear); "
                         "not the reference FID network, so not comparable with published FIDs")


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
    results["torchvision_inception"] = {"computed": False, "reason": NO_INCEPTION}
    if compares_images and req.inception_weights is not None:
        inception = inception_feature_net(req.inception_weights, device)  # first: a bad file fails fast
        results["torchvision_inception"] = {
            "computed": True,
            "network": TORCHVISION_INCEPTION,
            "weights": str(req.inception_weights),
        }
    if compares_images:
        classifier, classifier_info = obtain_classifier(req, metas, data, device, log)
        results["classifier"] = classifier_info
        nets["classifier"] = classifier.features
        if results["torchvision_inception"]["computed"]:
            nets["inception"] = inception

    real = real_features(split, nets, classifier, req.batch_size, device) if nets else {}
    if req.vqvae is not None:
        results["reconstruction"] = reconstruction_metrics(req, split, nets, real, generator, device)
    if req.prior is not None:
        if req.codes is not None:
            results["prior"] = prior_metrics_from_codes(req, metas, device)
        else:
            results["prior"] = prior_metrics_from_images(req, metas, data, device)
    if req.samples is not None:
        results["samples"] = sample_metrics(
            req, metas, data, nets, classifier, classifier_info, real, generator, device
        )
    return finite_json(results)
