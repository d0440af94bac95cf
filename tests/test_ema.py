"""The weight average of ``train-prior --ema-decay``: its update rule, and that it is what is validated and saved."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vqgen.formats.files import load_vqgen_file
from vqgen.config import PixelCNNConfig, PriorTrainOptions
from vqgen.errors import VQGenError
from vqgen.train.ema import WeightEMA
from vqgen.data.batches import make_loader
from vqgen.models import build_prior
from vqgen.formats.codes import load_codes
from vqgen.train.prior import evaluate_prior, train_prior
from vqgen.train.resume import resume_path


def test_the_average_weights_every_step_by_its_age_from_the_first_step_on():
    model = nn.BatchNorm1d(3)
    ema = WeightEMA(model, decay=0.9)
    cpu = torch.device("cpu")
    with torch.no_grad():
        model.weight.fill_(3.0)  # the model starts at 1: the average must not remember that
        model.running_mean.fill_(7.0)
    ema.after_step(None, 0, cpu)
    assert torch.allclose(ema.averaged().weight, torch.full((3,), 3.0))
    assert torch.equal(ema.averaged().running_mean, model.running_mean)
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.after_step(None, 1, cpu)
    assert torch.allclose(ema.averaged().weight, torch.full((3,), (0.9 * 3 + 5) / 1.9))
    assert not ema.averaged().weight.requires_grad and model.weight.requires_grad


def test_a_constant_model_is_its_own_average_and_a_long_run_forgets_the_start():
    model = nn.Linear(2, 2)
    ema = WeightEMA(model, decay=0.5)
    for step in range(3):
        ema.after_step(None, step, torch.device("cpu"))
    assert torch.allclose(ema.averaged().weight, model.weight)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for step in range(3, 40):
        ema.after_step(None, step, torch.device("cpu"))
    assert torch.allclose(ema.averaged().weight, model.weight) and not torch.allclose(ema.averaged().weight, start)


def evaluated_nll(codes, weights: dict[str, torch.Tensor], cfg: PixelCNNConfig) -> float:
    model = build_prior(cfg)
    model.load_state_dict(weights)
    return evaluate_prior(model, make_loader(codes.val, 8, shuffle=False, seed=0), torch.device("cpu"))


def test_the_prior_file_holds_the_average_and_the_resume_file_both(tmp_path, code_file):
    codes = load_codes(code_file)
    cfg = PixelCNNConfig(num_codes=codes.meta["num_codes"], latent_shape=codes.prior_latent_shape,
                         channels=8, num_layers=2, head_channels=8, dropout=0.0)
    out = tmp_path / "prior.safetensors"
    opts = PriorTrainOptions(epochs=1, batch_size=8, lr=1e-2, device="cpu", ema_decay=0.9)  # 5 steps
    metrics = train_prior(codes, cfg, opts, out)
    saved, meta = load_vqgen_file(out, "prior")
    resume, _ = load_vqgen_file(resume_path(out), "resume")
    trained = {k.removeprefix("model."): v for k, v in resume.items() if k.startswith("model.")}
    names = [name for name, _ in build_prior(cfg).named_parameters()]
    average = {name: resume[f"ema.running.{i}"] / (1 - 0.9**5) for i, name in enumerate(names)}
    assert set(saved) == set(trained) and set(average) <= set(saved)
    assert all(torch.allclose(saved[k], average[k]) for k in average)
    assert any(not torch.equal(saved[k], trained[k]) for k in saved)
    assert meta["train_options"]["ema_decay"] == 0.9 and int(resume["ema.updates"]) == 5
    assert metrics["val_nll_nats"] == pytest.approx(evaluated_nll(codes, saved, cfg))


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(VQGenError, match="--ema-decay must be in"):
        PriorTrainOptions(ema_decay=1.0).validate()
