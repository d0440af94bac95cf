"""Time one training step of a photo VQ-VAE (3x32x32, batch 32, the default networks for photos) without the
discriminator and with one of 64, 32 or 16 channels (--disc-channels; 32 is the default), updated every other step
(--disc-every 2, the default) or every step: what the GAN costs a step.

    python bench/gan_steps.py [--amp off|bf16] [--steps 16]

Each step is the trainer's: autoencoder forward, reconstruction loss plus the adaptively weighted adversarial
loss, backward and Adam, then the discriminator's update on the same batch (every --disc-every steps: the
time is the mean over --steps). The discriminator is on from the first step (in training it joins after
--gan-start steps).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from vqgen.config import GanOptions, VQVAEConfig
from vqgen.device import autocast, memory_format
from vqgen.losses import ReconstructionLoss
from vqgen.models.vqvae import VQVAE
from vqgen.train.gan import GanTrainer

ROWS = [("no discriminator", GanOptions(gan=False))] + [
    (f"--disc-channels {c}", GanOptions(gan=True, disc_channels=c)) for c in (64, 32, 16)] + [
    ("--disc-channels 32 --disc-every 1", GanOptions(gan=True, disc_channels=32, disc_every=1))]


def step_function(gan: GanOptions, amp: str, images: torch.Tensor):
    device = torch.device("cpu")
    model = VQVAE(VQVAEConfig(in_channels=3, image_size=(32, 32)).sized()).to(memory_format=memory_format(device, amp))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    reconstruction = ReconstructionLoss("psnr", None, 1.0, device)
    trainer = (GanTrainer(replace(gan, gan_start=0), 3, (32, 32), model.decoder.last_layer.weight, 1e-3, device, amp,
                          reconstruction) if gan.gan else None)
    target = model.to_model(images)

    def step(i: int) -> None:
        with autocast(device, amp):
            recon, q = model(images)
        loss, _ = trainer.generator_loss(recon, target, i) if trainer else reconstruction(recon, target)
        optimizer.zero_grad(set_to_none=True)
        (loss + q.loss).backward()
        optimizer.step()
        if trainer:
            trainer.discriminator_step(recon, target, i)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amp", choices=("off", "bf16"), default="off")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.rand(32, 3, 32, 32)
    print(f"| VQ-VAE step, --amp {args.amp} | ms / step |\n|---|---:|")
    for name, gan in ROWS:
        step = step_function(gan, args.amp, images)
        for i in range(3):  # warm-up: oneDNN picks its kernels
            step(i)
        started = time.perf_counter()
        for i in range(args.steps):
            step(i)
        print(f"| {name} | {(time.perf_counter() - started) * 1000 / args.steps:.1f} |", flush=True)


if __name__ == "__main__":
    main()
