"""Precision on the CPU: --amp auto picks bf16 only where the CPU has native bfloat16 units; both paths train."""

import pytest
import torch

from vqgen import device as dev
from vqgen.config import VQVAEConfig
from vqgen.errors import VQGenError
from vqgen.losses import reconstruction_loss
from vqgen.models.vqvae import VQVAE

CPU = torch.device("cpu")


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


def one_step(amp: str) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = VQVAEConfig(hidden_channels=16, res_channels=8, num_res_blocks=1, num_codes=16, code_dim=8)
    model = VQVAE(cfg).to(memory_format=dev.memory_format(CPU, amp))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = torch.rand(8, 1, 28, 28)
    with dev.autocast(CPU, amp):
        recon, q = model(images)
        loss = reconstruction_loss(recon.float(), model.to_model(images), "psnr") + q.loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    return model.decoder.last_layer.weight.detach().clone()


def test_float32_and_bf16_training_steps_both_work_and_differ():
    fp32, bf16 = one_step("off"), one_step("bf16")
    assert torch.isfinite(bf16).all()
    assert not torch.equal(fp32, bf16)  # bf16 really ran: its rounding moved the weights differently
    torch.testing.assert_close(fp32, bf16, atol=0.05, rtol=0)  # but it is the same step
