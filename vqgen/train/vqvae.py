"""Stage 1: train the VQ-VAE (encoder, codebook, decoder) on images.

The model, its loss (reconstruction of choice + quantizer terms, plus the GAN's when on), its
validation (MSE, PSNR, codebook use over the whole split) and what it writes each epoch
(checkpoint, reconstruction grids); ``vqgen.train.loop.fit`` does the training itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.data.batches import Batches, make_loader
from vqgen.checkpoint import check_output_path, save_vqgen_file
from vqgen.config import DataOptions, VQVAETrainOptions, to_dict
from vqgen.data import ImageData, load_image_data, spread
from vqgen.device import memory_format, resolve_device
from vqgen.images import interleave, save_grid
from vqgen.logs import say
from vqgen.eval.metrics import CodeHistogram, psnr_per_image
from vqgen.models.vqvae import VQVAE, VQVAEConfig, level_shapes
from vqgen.train.gan import GanTrainer
from vqgen.train.loop import StepResult, Trainer, artifact_path, fit, prepare_run, warmup_cosine


class VQVAETrainer(Trainer):
    stage, what = "vqvae", "the VQ-VAE loss"

    def __init__(self, data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, device: torch.device, out: Path):
        self.data, self.cfg, self.opts, self.device, self.out = data, cfg, opts, device, out
        self.model = VQVAE(cfg).to(device, memory_format=memory_format(device, opts.amp))
        self.train_batches = make_loader(data.train, opts.batch_size, shuffle=True, seed=opts.seed,
                                         num_workers=opts.num_workers, drop_last=True, max_shift=opts.augment_shift)
        self.val_batches = make_loader(data.val, opts.batch_size * 2, shuffle=False, seed=opts.seed,
                                       num_workers=opts.num_workers)
        if opts.gan.gan and opts.gan.disc_layers is None:
            opts.gan = opts.gan.for_image(cfg.image_size)
            h, w = cfg.image_size
            say(f"--disc-layers {opts.gan.disc_layers}: the deepest discriminator {h}x{w} images allow (at most 3)")
        # recon/perceptual/adversarial losses; the discriminator and its optimizer live in here
        self.gan = GanTrainer(opts.gan, cfg.in_channels, cfg.image_size, self.model.decoder.last_layer.weight,
                              opts.lr, device, opts.amp)
        self.hooks = {"gan": self.gan}
        picked = spread(len(data.val), min(32, len(data.val)))
        self.preview = torch.stack([data.val[i][0] for i in picked]).to(device)

    def run_identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "data": self.data.spec, "options": to_dict(self.opts)}

    def start(self, total_steps: int) -> None:
        # after restore: a new --epochs moves both
        for quantizer in self.model.quantizers.values():
            quantizer.set_restart_horizon(total_steps)
        self.gan.follow_schedule(warmup_cosine(total_steps, self.opts.warmup_steps))

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        images = batch[0].to(self.device, non_blocking=True)
        recon, q = net(images)
        target = self.model.to_model(images)
        recon_loss, logs = self.gan.generator_loss(recon, target, step)
        loss = recon_loss + q.loss
        logged = {"loss": loss.item(), "recon_mse": logs["mse"], "commitment": q.commitment.item()}
        shown = {f"{name}_dead" if name == "top" else "dead": quantizer.dead_codes()
                 for name, quantizer in self.model.quantizers.items()}
        return StepResult(loss, logged, outputs=(recon, target), shown=shown)

    def evaluate(self) -> dict[str, float]:
        return evaluate_vqvae(self.model, self.val_batches, self.device)

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


def train_vqvae(
    data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, out: Path, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train, validate each epoch, save the checkpoint (and a reconstruction grid) each epoch.

    Every ``opts.save_every`` epochs, and when SIGINT/SIGTERM stops the run, the full training
    state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from one.
    """
    device = prepare_run(opts, out, cfg)
    return fit(VQVAETrainer(data, cfg, opts, device, Path(out)), opts, Path(out), resume)


def train_vqvae_on(data_opts: DataOptions, cfg: VQVAEConfig, opts: VQVAETrainOptions, out: Path,
                   resume: str | None = None) -> dict[str, Any]:
    """``vqgen train-vqvae``: open the data named by ``data_opts`` (one download per machine), then train."""
    opts.validate()  # before loading data: a bad option fails at once
    cfg.validate_quantizer()
    check_output_path(out)
    dist.setup(resolve_device(opts.device))  # under torchrun: join now, so that one process per machine downloads
    with dist.local_main_first():
        data = load_image_data(**to_dict(data_opts))
    say(data.describe())
    cfg.in_channels, cfg.image_size = data.channels, data.image_size
    return train_vqvae(data, cfg, opts, out, resume)


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, batches: Batches, device: torch.device) -> dict[str, float]:
    """Reconstruction MSE/PSNR (images in [0, 1]) and codebook usage over a whole split (the top level's
    as ``top_<key>`` with two levels)."""
    model.eval()
    histogram = CodeHistogram(model.cfg.total_codes, device)
    top_histogram = CodeHistogram(model.cfg.num_codes, device)
    sq_err = torch.zeros((), device=device, dtype=torch.float64)
    psnr_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    pixels = 0
    for images, _ in batches:
        images = images.to(device)
        recon, q = model(images)
        recon = model.from_model(recon.float())
        sq_err += (recon - images).pow(2).sum()
        psnr_sum += psnr_per_image(recon, images).sum()
        count += images.shape[0]
        pixels = images[0].numel()
        histogram.add(q.indices)
        if model.levels == 2:
            top_histogram.add(q.top.indices)
    sq_err, psnr_sum, count = (dist.all_reduce_sum(t) for t in (sq_err, psnr_sum, count))
    histogram.reduce()
    mse = float(sq_err / (count * pixels))
    top = {}
    if model.levels == 2:
        top_histogram.reduce()
        top = {f"top_{key}": value for key, value in top_histogram.summary().items()}
    return {
        "mse": mse,
        "psnr": float(psnr_sum / count),
        "psnr_of_mean_mse": 10 * math.log10(1 / max(mse, 1e-12)),
        **histogram.summary(),
        **top,
    }


def save_vqvae(out: Path, model: VQVAE, data: ImageData, metrics: dict[str, Any], opts: VQVAETrainOptions) -> None:
    meta = {
        "kind": "vqvae",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        "dataset": data.spec,
        "label_names": data.label_names,
        "image": {"channels": data.channels, "size": list(data.image_size), "pixel_range": [0, 1]},
        "model_space": f"[-1, 1] (x * 2 - 1); reconstruction loss is {opts.gan.recon_loss.upper()} there",
        "latent_shape": list(model.cfg.latent_shape),
        **level_shapes(model.cfg),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": to_dict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)


@torch.no_grad()
def save_reconstruction_grid(model: VQVAE, images: torch.Tensor, path: Path) -> None:
    model.eval()
    recon = model.from_model(model(images)[0].float())
    save_grid(interleave(images, recon), path, nrow=8)
