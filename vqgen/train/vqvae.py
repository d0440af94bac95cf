"""The VQ-VAE's trainer (encoder, codebook, decoder; stage 1 is ``vqgen.stages.train_vqvae``).

The model, its loss (reconstruction of choice + quantizer terms, plus the GAN's when on), its
validation (MSE, PSNR, codebook use over the whole split) and what it writes each epoch
(checkpoint, reconstruction grids); ``vqgen.train.loop.fit`` does the training itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vqgen.data.batches import make_loader
from vqgen.formats.checkpoints import save_vqvae
from vqgen.config import VQVAETrainOptions, to_dict
from vqgen.data import ImageData, spread
from vqgen.device import memory_format
from vqgen.formats.images import interleave, save_grid
from vqgen.logs import say
from vqgen.losses import ReconstructionLoss
from vqgen.measures import reconstruction_numbers
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.train.gan import GanTrainer
from vqgen.train.loop import StepResult, Trainer, artifact_path, train, warmup_cosine


class VQVAETrainer(Trainer):
    stage, what = "vqvae", "the VQ-VAE loss"

    def __init__(self, data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, device: torch.device, out: Path):
        self.data, self.cfg, self.opts, self.device, self.out = data, cfg, opts, device, out
        self.model = VQVAE(cfg).to(device, memory_format=memory_format(device, opts.amp))
        self.train_batches = make_loader(data.train, opts.batch_size, shuffle=True, seed=opts.seed,
                                         num_workers=opts.num_workers, drop_last=True, max_shift=opts.augment_shift,
                                         flip=bool(opts.flip))
        self.val_batches = make_loader(data.val, opts.batch_size * 2, shuffle=False, seed=opts.seed,
                                       num_workers=opts.num_workers)
        gan = opts.gan
        self.reconstruction = ReconstructionLoss(gan.recon_loss, gan.perceptual_weights, gan.perceptual_weight, device)
        self.gan: GanTrainer | None = None  # with --gan: the discriminator, its optimizer, the adversarial loss
        if gan.gan:
            if gan.disc_layers is None:
                self.opts = opts = replace(opts, gan=gan.for_image(cfg.image_size))  # recorded as chosen
                h, w = cfg.image_size
                say(f"--disc-layers {opts.gan.disc_layers}: the deepest discriminator {h}x{w} images allow (at most 3)")
            self.gan = GanTrainer(opts.gan, cfg.in_channels, cfg.image_size, self.model.decoder.last_layer.weight,
                                  opts.lr, device, opts.amp, self.reconstruction)
        self.hooks = {"gan": self.gan} if self.gan else {}
        picked = spread(len(data.val), min(32, len(data.val)))
        self.preview = torch.stack([data.val[i][0] for i in picked]).to(device)

    def run_identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "data": self.data.spec, "options": to_dict(self.opts)}

    def start(self, total_steps: int) -> None:
        # after restore: a new --epochs moves both
        for quantizer in self.model.quantizers.values():
            quantizer.set_restart_horizon(total_steps)
        if self.gan:
            self.gan.follow_schedule(warmup_cosine(total_steps, self.opts.warmup_steps))

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        images = batch[0].to(self.device, non_blocking=True)
        recon, q = net(images)
        target = self.model.to_model(images)
        recon_loss, logs = (self.gan.generator_loss(recon, target, step) if self.gan
                            else self.reconstruction(recon, target))
        loss = recon_loss + q.loss
        logged = {"loss": loss.detach(), "recon_mse": logs["mse"], "commitment": q.commitment.detach()}
        if "perceptual" in logs and not self.gan:  # with --gan the hook logs it (gan_perceptual)
            logged["perceptual"] = logs["perceptual"]
        return StepResult(loss, logged, outputs=(recon, target))

    def postfix(self) -> dict[str, Any]:
        return {f"{name}_dead" if name == "top" else "dead": quantizer.dead_codes()
                for name, quantizer in self.model.quantizers.items()}

    def evaluate(self) -> dict[str, float]:
        return reconstruction_numbers(self.model, self.val_batches, self.device)

    def report(self, m: dict[str, Any]) -> None:
        say(
            f"[bold]vqvae epoch {m['epoch']}[/bold]  train mse {m['train_recon_mse']:.5f}  "
            f"val psnr [green]{m['val_psnr']:.2f} dB[/green]  val mse {m['val_mse']:.5f}  "
            f"perplexity {m['val_perplexity']:.1f}  codes used {m['val_codes_used']}/{m['val_num_codes']}  "
            + (f"top: perplexity {m['val_top_perplexity']:.1f}  codes used {m['val_top_codes_used']}  "
               if "val_top_perplexity" in m else "")
            + f"({m['elapsed_s']:.0f}s)"
        )
        if "gan_d_loss" in m:
            say(
                f"  gan: g {m['gan_g_loss']:.3f}  d {m['gan_d_loss']:.3f}  adaptive weight "
                f"{m['gan_adaptive_weight']:.3g}  D accuracy real {m['gan_d_acc_real']:.0%} / fake {m['gan_d_acc_fake']:.0%}"
            )

    def save(self, metrics: dict[str, Any], last: bool) -> None:
        out = self.out
        save_vqvae(out, self.model, self.data, metrics, self.opts)
        save_reconstruction_grid(self.model, self.preview, artifact_path(out, "recon.png"))
        epoch_grid = artifact_path(out, "epochs") / f"recon_{metrics['epoch']:03d}.png"
        save_reconstruction_grid(self.model, self.preview[:16], epoch_grid)


def train_vqvae(data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, out: Path,
                resume: str | Path | None = None) -> dict[str, Any]:
    """Train, validate and save the checkpoint (and reconstruction grids) each epoch (``vqgen.train.loop.train``:
    resumable, ``resume`` a path or "auto"). Options left to the image kind are settled for ``cfg``'s images."""
    opts = opts.settled_for(cfg.in_channels, cfg.image_size, cfg.sized().quantizer)
    return train(lambda device: VQVAETrainer(data, cfg, opts, device, Path(out)), opts, Path(out), resume)


@torch.no_grad()
def save_reconstruction_grid(model: VQVAE, images: torch.Tensor, path: Path) -> None:
    model.eval()
    recon = model.from_model(model(images)[0].float())
    save_grid(interleave(images, recon), path, nrow=8)
