"""VQGAN-style training: discriminator, hinge/adaptive/perceptual losses, GanTrainer, and the CLI options."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vqgen.errors import VQGenError
from vqgen.config import GanOptions
from vqgen.train.gan import GanTrainer
from vqgen.losses import (
    PerceptualLoss,
    adaptive_weight,
    discriminator_accuracy,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
    settle_at_bounds,
    vgg16_features,
)
from vqgen.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from vqgen.models.vqvae import VQVAE, VQVAEConfig

CPU = torch.device("cpu")


def tiny_vqvae() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(
        VQVAEConfig(in_channels=3, image_size=(16, 16), hidden_channels=16, res_channels=8, num_res_blocks=1,
                    num_codes=16, code_dim=8)
    )


def tiny_trainer(model: VQVAE, **options) -> GanTrainer:
    opts = GanOptions(**{"gan": True, "gan_start": 0, "disc_layers": 2, "disc_channels": 8, "disc_every": 1,
                         **options})
    return GanTrainer(opts, 3, (16, 16), model.decoder.last_layer.weight, lr=1e-3, device=CPU)


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- discriminator


def test_patch_discriminator_gives_a_grid_of_logits_and_rejects_tiny_images():
    disc = PatchDiscriminator(DiscriminatorConfig(in_channels=3, channels=8, layers=3))
    assert disc(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    with pytest.raises(VQGenError, match="--disc-layers 3"):
        DiscriminatorConfig(layers=3).check_image_size((16, 16))


def test_discriminator_logits_do_not_depend_on_the_rest_of_the_batch():
    # spectral norm, no batch norm: real and fake can share one forward pass
    disc = PatchDiscriminator(DiscriminatorConfig(in_channels=3, channels=8, layers=2)).eval()
    x = images(4)
    together = disc(x)
    alone = torch.cat([disc(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)


# ----------------------------------------------------------------------------- losses


def test_reconstruction_loss_kinds():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert reconstruction_loss(a, b, "mse").item() == pytest.approx(0.25)
    assert reconstruction_loss(a, b, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(a, b, "l1+mse").item() == pytest.approx(0.75)
    with pytest.raises(VQGenError, match="--recon-loss"):
        reconstruction_loss(a, b, "huber")


def test_overshoot_past_a_bound_the_target_sits_on_costs_nothing():
    target = torch.tensor([[-1.0, 1.0, 0.0, -1.0]])
    recon = torch.tensor([[-1.7, 1.4, 0.5, -0.5]])  # overshoots, an interior error, an undershoot at a bound
    settled = settle_at_bounds(recon, target)
    assert settled.tolist() == [[-1.0, 1.0, 0.5, -0.5]]
    for kind in ("mse", "l1", "l1+mse"):
        assert reconstruction_loss(recon, target, kind) == reconstruction_loss(settled, target, kind)
    recon.requires_grad_(True)
    reconstruction_loss(recon, target, "mse").backward()
    assert recon.grad[0, 0] == 0 and recon.grad[0, 1] == 0 and recon.grad[0, 2] > 0 and recon.grad[0, 3] > 0


def test_psnr_loss_is_the_mean_per_image_log_mse():
    target = torch.zeros(3, 1, 4, 4)
    recon = torch.stack([torch.full((1, 4, 4), e) for e in (0.1, 0.2, 0.4)])  # per-image MSE e^2
    expected = sum(math.log(e**2 + 1e-5) for e in (0.1, 0.2, 0.4)) / 3 / 100
    assert reconstruction_loss(recon, target, "psnr").item() == pytest.approx(expected, rel=1e-5)
    # it weighs images by relative error: halving the error of the best image helps as much as of the worst
    better_best = reconstruction_loss(recon * torch.tensor([0.5, 1, 1]).view(3, 1, 1, 1), target, "psnr")
    better_worst = reconstruction_loss(recon * torch.tensor([1, 1, 0.5]).view(3, 1, 1, 1), target, "psnr")
    assert better_best.item() == pytest.approx(better_worst.item(), rel=1e-3)
    assert reconstruction_loss(recon * 0.5, target, "mse") < reconstruction_loss(recon, target, "mse")


def test_hinge_losses_and_accuracy():
    confident_real, confident_fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert hinge_d_loss(confident_real, confident_fake).item() == 0.0  # beyond the margins: no loss
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(1.0)
    assert hinge_g_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert discriminator_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -2.0, 3.0, -0.5])) == (0.5, 0.75)


def test_adaptive_weight_is_the_clamped_ratio_of_gradient_norms():
    recon_grad, gan_grad = torch.full((3, 3), 2.0), torch.full((3, 3), 0.5)
    weight = adaptive_weight(recon_grad, gan_grad)
    assert weight.item() == pytest.approx(4.0, rel=1e-3)
    assert not weight.requires_grad
    assert adaptive_weight(recon_grad, torch.zeros(3, 3), max_weight=50.0).item() == 50.0
    assert adaptive_weight(torch.full((3, 3), float("inf")), gan_grad).item() == 0.0


def test_the_generator_loss_sends_the_decoder_the_gradient_of_the_weighted_sum():
    """The trainer takes both gradients at the reconstruction in one pass each; the decoder must receive exactly
    the gradient of rec + gan_weight * λ * g, with λ from the two losses' gradients at its last layer."""
    model = tiny_vqvae()
    trainer = tiny_trainer(model, gan_weight=0.7)
    trainer.disc.eval()  # no power iteration between the two passes: the same discriminator for both
    model.eval()  # nor a codebook update
    x = images()
    target = model.to_model(x)

    def decoder_grads(loss_of) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        recon, _ = model(x)
        loss = loss_of(recon.float())
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.decoder.parameters()]

    def direct(recon: torch.Tensor) -> torch.Tensor:
        rec, _ = trainer.reconstruction(recon, target)
        g = hinge_g_loss(trainer.disc(recon.clamp(-1, 1)))
        w = trainer.last_layer_weight
        rec_w, = torch.autograd.grad(rec, w, retain_graph=True)
        g_w, = torch.autograd.grad(g, w, retain_graph=True)
        return rec + 0.7 * adaptive_weight(rec_w, g_w) * g

    value, grads = decoder_grads(lambda recon: trainer.generator_loss(recon, target, step=0)[0])
    assert all(p.grad is None for p in trainer.disc.parameters())  # the generator's loss leaves D alone
    expected_value, expected = decoder_grads(direct)
    assert value.item() == pytest.approx(expected_value.item(), rel=1e-5)
    assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-9) for g, e in zip(grads, expected))


# ----------------------------------------------------------------------------- GanTrainer


def run_steps(model: VQVAE, trainer: GanTrainer, steps: int) -> list[dict[str, float]]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logs = []
    for step in range(steps):
        x = images(seed=step)
        recon, q = model(x)
        target = model.to_model(x)
        loss, log = trainer.generator_loss(recon, target, step)
        optimizer.zero_grad()
        (loss + q.loss).backward()
        optimizer.step()
        log.update(trainer.discriminator_step(recon, target, step))
        logs.append(log)
    return logs


def test_a_few_gan_steps_train_the_discriminator_with_finite_numbers():
    model = tiny_vqvae()
    trainer = tiny_trainer(model, gan_start=0)
    before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    logs = run_steps(model, trainer, 4)
    after = trainer.disc.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("original"))
    for log in logs:
        assert {"g_loss", "adaptive_weight", "d_loss", "d_acc_real", "d_acc_fake"} <= log.keys()
        assert all(math.isfinite(v) for v in log.values())
        assert log["adaptive_weight"] > 0
    summary = trainer.epoch_summary()
    assert set(summary) == {"gan_g_loss", "gan_adaptive_weight", "gan_d_loss", "gan_d_acc_real", "gan_d_acc_fake"}
    assert summary["gan_d_loss"] == pytest.approx(sum(log["d_loss"] for log in logs) / 4)
    assert trainer.epoch_summary() == {}  # reset after reading


def test_generator_loss_reaches_the_decoder_but_not_the_discriminator():
    model = tiny_vqvae()
    trainer = tiny_trainer(model, gan_start=0, gan_weight=1.0)
    x = images()
    recon, _ = model(x)
    target = model.to_model(x)
    loss, _ = trainer.generator_loss(recon, target, step=0)
    adversarial = loss - reconstruction_loss(recon, target, trainer.opts.recon_loss)
    adversarial.backward()
    assert model.decoder.last_layer.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in trainer.disc.parameters())
    assert all(p.requires_grad for p in trainer.disc.parameters())


def test_nothing_adversarial_happens_before_gan_start():
    model = tiny_vqvae()
    trainer = tiny_trainer(model, gan_start=3)
    before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    x = images()
    recon, _ = model(x)
    target = model.to_model(x)
    loss, log = trainer.generator_loss(recon, target, step=2)
    assert loss.item() == pytest.approx(reconstruction_loss(recon, target, trainer.opts.recon_loss).item())
    assert "g_loss" not in log
    assert trainer.discriminator_step(recon, target, step=2) == {}
    assert all(torch.equal(before[k], v) for k, v in trainer.disc.state_dict().items())
    assert "g_loss" in trainer.generator_loss(recon, target, step=3)[1]


def test_disc_every_updates_the_discriminator_on_every_nth_step_from_gan_start():
    model = tiny_vqvae()
    trainer = tiny_trainer(model, gan_start=2, disc_every=3)
    x = images()
    target = model.to_model(x)
    updated = []
    for step in range(10):
        recon, _ = model(x)
        assert "g_loss" in trainer.generator_loss(recon, target, step)[1] or step < 2  # the generator's: every step
        before = [p.detach().clone() for p in trainer.disc.parameters()]
        logs = trainer.discriminator_step(recon, target, step)
        changed = any(not torch.equal(b, p) for b, p in zip(before, trainer.disc.parameters()))
        assert changed == ("d_loss" in logs)
        updated.append(changed)
    assert [step for step, done in enumerate(updated) if done] == [2, 5, 8]


@pytest.mark.parametrize("every", [0, -1])
def test_disc_every_below_one_is_refused(every):
    with pytest.raises(VQGenError, match="--disc-every must be 1 or more"):
        GanOptions(gan=True, disc_every=every).validate()


def test_trainer_state_round_trip_restores_discriminator_and_optimizer():
    model = tiny_vqvae()
    trainer = tiny_trainer(model)
    run_steps(model, trainer, 2)
    state = trainer.state_dict()
    fresh = tiny_trainer(tiny_vqvae())
    fresh.load_state_dict(state)
    for key, value in trainer.disc.state_dict().items():
        assert torch.equal(fresh.disc.state_dict()[key], value)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == trainer.optimizer.state_dict()["state"][0]["step"]
    torch.testing.assert_close(fresh.epoch_summary(), trainer.epoch_summary())  # the epoch's running log too
    with pytest.raises(ValueError, match="--disc-layers/--disc-channels"):
        tiny_trainer(tiny_vqvae(), disc_channels=4).load_state_dict(state)
    with pytest.raises(ValueError, match="disagree on --gan"):
        tiny_trainer(tiny_vqvae(), gan=False).load_state_dict(state)


# ----------------------------------------------------------------------------- perceptual loss


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"features.{k}": v for k, v in vgg16_features()[:30].state_dict().items()}


def test_perceptual_loss_from_safetensors_and_weights_only_pth(tmp_path, vgg_state):
    safetensors_file, pth_file = tmp_path / "vgg16.safetensors", tmp_path / "vgg16.pth"
    save_file(vgg_state, str(safetensors_file))
    torch.save(vgg_state, pth_file)
    a, b = images(2, seed=3) * 2 - 1, images(2, seed=4) * 2 - 1
    values = []
    for path in (safetensors_file, pth_file):
        loss = PerceptualLoss.from_file(path)
        assert loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
        values.append(loss(a, b).item())
    assert values[0] > 0
    assert values[0] == pytest.approx(values[1])
    grey = PerceptualLoss.from_file(safetensors_file)(a[:, :1], b[:, :1])
    assert math.isfinite(grey.item())


class Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"this is not a weights file", "cannot read VGG16 weights"),
        (pickle.dumps({"features.0.weight": Payload()}, protocol=2), "weights-only loader refused"),
        ("wrong tensors", "not torchvision VGG16 weights"),
    ],
    ids=["missing", "garbage", "pickled-object", "wrong-tensors"],
)
def test_bad_perceptual_weights_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "vgg16.pth"
    if content == "wrong tensors":
        path = tmp_path / "vgg16.safetensors"
        save_file({"features.0.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(VQGenError, match=message) as info:
        trainer_with_perceptual(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def trainer_with_perceptual(path: Path) -> GanTrainer:
    model = tiny_vqvae()
    return GanTrainer(GanOptions(perceptual_weights=str(path)), 3, (16, 16), model.decoder.last_layer.weight, 1e-3, CPU)


# ----------------------------------------------------------------------------- train-vqvae integration

TINY_GAN = ["--gan", "--gan-start", "0", "--disc-layers", "2", "--disc-channels", "8"]


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> Path:
    from conftest import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("rgb"), n_per_class=12, size=16, rgb=True)


def test_train_vqvae_with_gan_logs_finite_gan_numbers_and_writes_a_plain_vqvae(tmp_path, rgb_folder, vgg_state):
    from conftest import TINY_VQVAE, run_cli

    from vqgen.formats.checkpoints import load_vqvae
    from vqgen.formats.files import load_vqgen_file

    out, vgg = tmp_path / "vqvae.safetensors", tmp_path / "vgg16.safetensors"
    save_file(vgg_state, str(vgg))
    run_cli("train-vqvae", "--data", rgb_folder, "--out", out, "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--recon-loss", "l1+mse", "--perceptual-weights", vgg, "--perceptual-weight", "0.5", *TINY_VQVAE, *TINY_GAN)
    record = json.loads(out.with_name("vqvae.metrics.jsonl").read_text().splitlines()[-1])
    for key in ("gan_g_loss", "gan_d_loss", "gan_adaptive_weight", "gan_d_acc_real", "gan_d_acc_fake", "gan_perceptual"):
        assert math.isfinite(record[key]), key
    assert 0 <= record["gan_d_acc_real"] <= 1 and record["gan_adaptive_weight"] > 0 and record["gan_perceptual"] > 0
    tensors, meta = load_vqgen_file(out, "vqvae")
    assert not any("disc" in name for name in tensors)  # the discriminator stays out of the checkpoint
    recorded = meta["train_options"]["gan"]
    assert (recorded["gan"], recorded["gan_start"], recorded["disc_layers"], recorded["disc_channels"]) == (True, 0, 2, 8)
    assert (recorded["recon_loss"], recorded["perceptual_weights"], recorded["perceptual_weight"]) == ("l1+mse", str(vgg), 0.5)
    load_vqvae(out)  # later stages read it like any VQ-VAE
    resume_tensors, _ = load_vqgen_file(out.with_name("vqvae.resume.safetensors"), "resume")
    assert any(name.startswith("gan.discriminator.") for name in resume_tensors)
    assert any(name.startswith("gan.optimizer.state.") for name in resume_tensors)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--perceptual-weight", "0.5"], "--perceptual-weight needs --perceptual-weights"),
        (["--perceptual-weights", "no/such/vgg16.pth"], "no/such/vgg16.pth: --perceptual-weights file not found"),
    ],
    ids=["weight-without-file", "missing-file"],
)
def test_perceptual_loss_without_weights_is_refused_before_any_work(tmp_path, rgb_folder, flags, message):
    from conftest import TINY_VQVAE, run_cli

    out = tmp_path / "vqvae.safetensors"
    result = run_cli("train-vqvae", "--data", rgb_folder, "--out", out, "--device", "cpu", *TINY_VQVAE, *flags, ok=False)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_resume_restores_the_discriminator_bit_for_bit(tmp_path, rgb_folder, monkeypatch):
    """Stopped after epoch 1 and resumed, a --gan run ends exactly where an uninterrupted one does."""
    from vqgen.formats.files import load_vqgen_file
    from vqgen.data import load_image_data
    from vqgen.train.signals import StopSignal, TrainingStopped
    from vqgen.config import VQVAETrainOptions
    from vqgen.train.vqvae import train_vqvae

    data = load_image_data(str(rgb_folder))
    cfg = VQVAEConfig(in_channels=3, image_size=(16, 16), hidden_channels=16, res_channels=8, num_res_blocks=1,
                      num_codes=16, code_dim=8)
    opts = VQVAETrainOptions(epochs=2, batch_size=4, device="cpu", warmup_steps=2,
                             gan=GanOptions(gan=True, gan_start=2, disc_layers=2, disc_channels=8))
    whole, parts = tmp_path / "whole.safetensors", tmp_path / "parts.safetensors"
    train_vqvae(data, cfg, opts, whole)

    calls = iter(range(100))
    with monkeypatch.context() as patch:
        # polled after each of the 5 steps of epoch 1, then once at its end: stop there
        patch.setattr(StopSignal, "requested", lambda self, device=None: next(calls) == 5)
        with pytest.raises(TrainingStopped):
            train_vqvae(data, cfg, opts, parts)
    train_vqvae(data, cfg, opts, parts, resume="auto")

    for a, b in [(whole, parts), (whole.with_name("whole.resume.safetensors"), parts.with_name("parts.resume.safetensors"))]:
        tensors_a, _ = load_vqgen_file(a)
        tensors_b, _ = load_vqgen_file(b)
        assert tensors_a.keys() == tensors_b.keys()
        for name in tensors_a:
            if not name.startswith("rng."):
                assert torch.equal(tensors_a[name], tensors_b[name]), name
    assert any(name.startswith("gan.discriminator.") for name in tensors_a)


def test_a_gan_run_is_the_plain_run_until_gan_start(tmp_path, rgb_folder):
    from vqgen.formats.files import load_vqgen_file
    from vqgen.data import load_image_data
    from vqgen.config import VQVAETrainOptions
    from vqgen.train.vqvae import train_vqvae

    data = load_image_data(str(rgb_folder))
    cfg = VQVAEConfig(in_channels=3, image_size=(16, 16), hidden_channels=16, res_channels=8, num_res_blocks=1,
                      num_codes=16, code_dim=8)
    checkpoints = []
    for name, gan in [("plain", GanOptions()), ("gan", GanOptions(gan=True, gan_start=5, disc_layers=2, disc_channels=8))]:
        out = tmp_path / f"{name}.safetensors"
        train_vqvae(data, cfg, VQVAETrainOptions(epochs=1, batch_size=4, device="cpu", gan=gan), out)  # 5 steps
        checkpoints.append(load_vqgen_file(out)[0])
    plain, gan = checkpoints
    assert all(torch.equal(plain[name], gan[name]) for name in plain)


# ----------------------------------------------------------------------------- defaults that fit the data


def test_gan_on_the_default_data_picks_a_discriminator_that_fits(tmp_path):
    from conftest import TINY_VQVAE
    from typer.testing import CliRunner

    from vqgen.formats.files import read_metadata
    from vqgen.cli import app

    out = tmp_path / "vqvae.safetensors"
    result = CliRunner().invoke(app, ["train-vqvae", "--gan", "--gan-start", "0", "--disc-channels", "8", "--epochs", "1",
                                      "--out", str(out), "--device", "cpu", *TINY_VQVAE])
    assert result.exit_code == 0, result.output
    assert "--disc-layers 2" in result.output  # said in the log: 28x28 allows two stride-2 layers
    assert read_metadata(out)["train_options"]["gan"]["disc_layers"] == 2


@pytest.mark.parametrize("size, layers", [((8, 8), 1), ((16, 16), 2), ((28, 28), 2), ((32, 32), 3), ((256, 256), 3)])
def test_the_automatic_depth_is_the_deepest_that_fits(size, layers):
    chosen = GanOptions(gan=True).for_image(size)
    assert chosen.disc_layers == layers
    chosen.disc_config(1).check_image_size(size)  # fits
    if layers < 3:
        with pytest.raises(VQGenError, match="too small"):
            GanOptions(gan=True, disc_layers=layers + 1).disc_config(1).check_image_size(size)


def test_the_discriminator_sees_clamped_reconstructions_and_follows_the_lr_schedule():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(in_channels=3, image_size=(16, 16), hidden_channels=16, res_channels=8,
                              num_res_blocks=1, num_codes=16, code_dim=8))
    trainer = tiny_trainer(model)
    trainer.follow_schedule(lambda step: 0.5 ** step)
    seen = []
    trainer.disc.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    images = torch.rand(2, 3, 16, 16)
    target = model.to_model(images)
    recon = model(images)[0] * 50  # overshoots far past black and white
    trainer.generator_loss(recon, target, step=3)
    trainer.discriminator_step(recon, target, step=3)
    assert all(x.min() >= -1 and x.max() <= 1 for x in seen) and len(seen) == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)
