"""VQGAN-style autoencoder training (Esser et al. 2021): a PatchGAN discriminator whose loss is balanced by
VQGAN's adaptive weight, on top of the reconstruction loss (``vqgen.losses.ReconstructionLoss``).

``GanTrainer`` owns everything the plain VQ-VAE training does not have: the discriminator, its
optimizer and gradient scaler, and the running log of GAN numbers; the VQ-VAE trainer makes one only
with ``--gan``. Its ``generator_loss`` adds the adversarial term to the reconstruction loss (then the
quantizer loss is added and backpropagated through the autoencoder); as a hook of the training loop
(``vqgen.train.loop``) it then updates the discriminator after each optimizer step (``after_step``).
The discriminator never enters the VQ-VAE checkpoint; it lives in the resumable state only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from vqgen import distributed as dist
from vqgen.config import GanOptions
from vqgen.losses import (ReconstructionLoss, adaptive_weight, discriminator_accuracy, hinge_d_loss, hinge_g_loss,
                          with_gradient)
from vqgen.device import autocast, grad_scaler, memory_format
from vqgen.models.discriminator import PatchDiscriminator
from vqgen.train.loop import StepResult

# numbers averaged per epoch (only over the steps where they were computed)
LOGGED = ("perceptual", "g_loss", "adaptive_weight", "d_loss", "d_acc_real", "d_acc_fake")
DISC_BETAS = (0.5, 0.9)  # VQGAN's Adam betas for the discriminator


class GanTrainer:
    """Reconstruction/perceptual/adversarial losses of the autoencoder, and the discriminator's training."""

    def __init__(
        self,
        opts: GanOptions,
        in_channels: int,
        image_size: tuple[int, int],
        last_layer_weight: torch.Tensor,
        lr: float,
        device: torch.device,
        amp: str = "off",
        reconstruction: ReconstructionLoss | None = None,
    ):
        opts = opts.for_image(image_size)
        self.opts, self.device, self.amp = opts, device, amp
        self.last_layer_weight = last_layer_weight
        self.reconstruction = reconstruction or ReconstructionLoss(
            opts.recon_loss, opts.perceptual_weights, opts.perceptual_weight, device)
        self.disc: PatchDiscriminator | None = None
        if opts.gan:
            cfg = opts.disc_config(in_channels)
            cfg.check_image_size(image_size)
            # its own random stream, so a --gan run matches the plain run step for step until --gan-start
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1)
                self.disc = PatchDiscriminator(cfg)
            self.disc.to(device, memory_format=memory_format(device, amp))
            # real and fake go through in one forward pass, so DDP sees one forward per backward
            # (buffers are broadcast each forward: the spectral-norm power-iteration vectors stay in sync)
            device_ids = [device.index] if device.type == "cuda" else None
            self.disc_net = self.disc
            if dist.is_distributed():
                self.disc_net = DistributedDataParallel(self.disc, device_ids=device_ids)
            self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=DISC_BETAS)
            self.scaler = grad_scaler(device, amp)
        self.lr, self.schedule = lr, None
        self.last_logs: dict[str, float] = {}
        self._reset_log()

    def follow_schedule(self, schedule: Callable[[int], float]) -> None:
        """Give the discriminator the generator's LR schedule (a multiplier per step)."""
        self.schedule = schedule

    def active(self, step: int) -> bool:
        """Whether the adversarial game runs at this step (steps counted from 0)."""
        return self.disc is not None and step >= self.opts.gan_start

    # ------------------------------------------------------------------------- autoencoder side

    def generator_loss(
        self, recon: torch.Tensor, target: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Autoencoder loss without the quantizer terms: the reconstruction loss (``ReconstructionLoss``, whose
        logs it returns) plus, from ``--gan-start`` on, the adaptively weighted adversarial loss."""
        recon = recon.float()
        if not self.active(step):
            rec, logs = self.reconstruction(recon, target)
            self.last_logs = logs
            self._record(logs)
            return rec, logs
        # Both losses' gradients are taken at a detached copy of the reconstruction: the adaptive weight needs
        # them apart, and the discriminator is then backpropagated once a step, not twice (a tenth of a step)
        leaf = recon.detach().requires_grad_()
        rec, logs = self.reconstruction(leaf, target)
        self.disc.requires_grad_(False)  # the generator's gradient must reach the decoder only
        with autocast(self.device, self.amp):
            logits_fake = self.disc(leaf.clamp(-1, 1))  # what decoding shows: overshoot is no free tell
        self.disc.requires_grad_(True)
        g_loss = hinge_g_loss(logits_fake)
        rec_grad, = torch.autograd.grad(rec, leaf)
        gan_grad, = torch.autograd.grad(g_loss, leaf)
        weight = adaptive_weight(self.at_last_layer(recon, rec_grad), self.at_last_layer(recon, gan_grad),
                                 self.opts.max_adaptive_weight)
        logs.update(g_loss=g_loss.detach(), adaptive_weight=weight)
        self.last_logs = logs
        self._record(logs)
        scale = self.opts.gan_weight * weight
        return with_gradient(recon, rec + scale * g_loss, rec_grad + scale * gan_grad), logs

    def at_last_layer(self, recon: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The gradient at the decoder's last layer of a loss whose gradient at the reconstruction is ``grad``."""
        return torch.autograd.grad(recon, self.last_layer_weight, grad_outputs=grad, retain_graph=True)[0]

    # ------------------------------------------------------------------------- discriminator side

    def after_step(self, result: StepResult, step: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The loop's hook: update the discriminator on the step's (reconstruction, target); returns its loss
        for the loop's NaN check."""
        logs = self.discriminator_step(*result.outputs, step)
        self.last_logs.update(logs)
        return {"the discriminator loss": logs["d_loss"]} if "d_loss" in logs else {}

    def discriminator_step(self, fake: torch.Tensor, real: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One hinge-loss update of the discriminator on detached reconstructions vs real images."""
        if not self.active(step) or (step - self.opts.gan_start) % self.opts.disc_every:
            return {}
        fake = fake.detach().float().clamp(-1, 1)
        if self.schedule is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * self.schedule(step)
        with autocast(self.device, self.amp):
            logits = self.disc_net(torch.cat([real, fake]))
        logits_real, logits_fake = logits.float().split([real.shape[0], fake.shape[0]])
        d_loss = hinge_d_loss(logits_real, logits_fake)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        acc_real, acc_fake = discriminator_accuracy(logits_real.detach(), logits_fake.detach())
        logs = {"d_loss": d_loss.detach(), "d_acc_real": acc_real, "d_acc_fake": acc_fake}
        self._record(logs)
        return logs

    # ------------------------------------------------------------------------- logs

    def _reset_log(self) -> None:
        self._sums = torch.zeros(len(LOGGED), dtype=torch.float64, device=self.device)
        self._counts = torch.zeros(len(LOGGED), dtype=torch.float64)

    def _record(self, logs: dict[str, torch.Tensor]) -> None:
        for i, key in enumerate(LOGGED):
            if key in logs:
                self._sums[i] += logs[key]
                self._counts[i] += 1

    def epoch_summary(self) -> dict[str, float]:
        """Means since the last call (over all processes), keys prefixed ``gan_``; then start afresh.

        A collective under torchrun: every rank must call it.
        """
        both = torch.stack([self._sums, self._counts.to(self.device)])
        sums, counts = dist.all_reduce_sum(both).cpu()
        self._reset_log()
        return {f"gan_{key}": float(s / c) for key, s, c in zip(LOGGED, sums, counts) if c > 0}

    def postfix(self) -> dict[str, str]:
        """Short progress-bar fields of the last step."""
        names = {"g_loss": "g", "d_loss": "d", "adaptive_weight": "λ", "perceptual": "lpips"}
        return {short: f"{float(self.last_logs[key]):.3g}" for key, short in names.items() if key in self.last_logs}

    # ------------------------------------------------------------------------- resumable state

    def state_dict(self) -> dict[str, Any]:
        """The running epoch log, and with --gan the discriminator, its optimizer and gradient scaler."""
        state: dict[str, Any] = {"log_sums": self._sums.clone(), "log_counts": self._counts.clone()}
        if self.disc is not None:
            state["discriminator"] = self.disc.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; a mismatch raises ValueError (the resume code adds the file's name)."""
        if ("discriminator" in state) != (self.disc is not None):
            raise ValueError("the saved run and this one disagree on --gan (a discriminator is saved only with --gan)")
        if "log_sums" in state:
            self._sums, self._counts = state["log_sums"].double().to(self.device), state["log_counts"].double().cpu()
        if self.disc is None:
            return
        try:
            self.disc.load_state_dict(state["discriminator"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ValueError(f"discriminator of another --disc-layers/--disc-channels ({first})") from e
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
