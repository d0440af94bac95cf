"""Precision on the CPU: --amp auto picks bf16 only where the CPU has native bfloat16 units; both paths train."""

import pytest
import torch

from vqgen import device as dev
from vqgen.config import VQVAEConfig
from vqgen.errors import VQGenError
from vqgen.losses import reconstruction_loss
from vqgen.models.vqvae import VQVAE

CPU = torch.device("cpu")
# the CUDA cases join whenever a GPU is present (CI has none; the device machine does)
DEVICES = [CPU, *([torch.device("cuda")] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "off")])
def test_auto_uses_bf16_only_with_native_units(monkeypatch, native, expected):
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: native)
    assert dev.resolve_amp(CPU, "auto") == expected
    assert dev.resolve_amp(CPU, "off") == "off" and dev.resolve_amp(CPU, "bf16") == "bf16"


def test_autocast_runs_convolutions_in_the_chosen_precision():
    conv, x = torch.nn.Conv2d(1, 4, 3), torch.rand(2, 1, 8, 8)
    with dev.autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with dev.autocast(CPU, "off"):
        assert conv(x).dtype == torch.float32


def test_fp16_needs_a_gpu_and_bad_values_are_refused():
    with pytest.raises(VQGenError, match="fp16 needs a CUDA GPU"):
        dev.autocast(CPU, "fp16")
    with pytest.raises(VQGenError, match="--amp must be"):
        dev.resolve_amp(CPU, "half")


def one_step(amp: str, device: torch.device = CPU) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = VQVAEConfig(hidden_channels=16, res_channels=8, num_res_blocks=1, num_codes=16, code_dim=8)
    model = VQVAE(cfg).to(device, memory_format=dev.memory_format(device, amp))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scaler = dev.grad_scaler(device, amp)
    images = torch.rand(8, 1, 28, 28).to(device)
    with dev.autocast(device, amp):
        recon, q = model(images)
        loss = reconstruction_loss(recon.float(), model.to_model(images), "psnr") + q.loss
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(loss)
    return model.decoder.last_layer.weight.detach().cpu().clone()


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_float32_and_mixed_precision_training_steps_both_work_and_differ(device):
    fp32 = one_step("off", device)
    for amp in ["bf16", *(["fp16"] if device.type == "cuda" else [])]:
        mixed = one_step(amp, device)
        assert torch.isfinite(mixed).all()
        assert not torch.equal(fp32, mixed), amp  # the low precision really ran: its rounding moved the weights
        torch.testing.assert_close(fp32, mixed, atol=0.05, rtol=0)  # but it is the same step
