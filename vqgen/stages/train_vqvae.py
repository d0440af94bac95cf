"""Stage 1: train the VQ-VAE (encoder, codebook, decoder) on images."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.checkpoint import check_output_path, save_vqgen_file
from vqgen.data import ImageData, spread
from vqgen.errors import VQGenError
from vqgen.gan import GanOptions, GanTrainer
from vqgen.images import interleave, save_grid
from vqgen.eval.metrics import CodeHistogram, psnr_per_image
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.resume import TrainingState
from vqgen.runtime import (
    JsonlLog,
    StopSignal,
    autocast,
    check_finite,
    grad_scaler,
    make_loader,
    memory_format,
    progress,
    resolve_device,
    seed_everything,
    set_epoch,
    warmup_cosine,
)


@dataclass
class VQVAETrainOptions:
    epochs: int = 100
    batch_size: int = 16
    lr: float = 2e-3
    augment_shift: int = 2  # training images shifted by up to this many whole pixels (0: off)
    warmup_steps: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    compile: bool = False
    num_workers: int = 0
    save_every: int = 1  # epochs between resumable training states
    gan: GanOptions = field(default_factory=GanOptions)  # loss options: --recon-loss, perceptual, --gan

    def validate(self) -> None:
        if self.epochs < 1:
            raise VQGenError(f"--epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise VQGenError(f"--lr must be positive, not {self.lr}")
        if self.save_every < 1:
            raise VQGenError(f"--save-every must be at least 1, not {self.save_every}")
        if self.num_workers < 0:
            raise VQGenError(f"--workers must be 0 or more, not {self.num_workers}")
        self.gan.validate()


def artifact_path(out: Path, suffix: str) -> Path:
    """checkpoints/vqvae.safetensors -> checkpoints/vqvae.<suffix> (logs and pictures beside it)."""
    return out.with_name(f"{out.stem}.{suffix}")


def train_vqvae(
    data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, out: Path, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train, validate each epoch, save the checkpoint (and a reconstruction grid) each epoch.

    Every ``opts.save_every`` epochs, and when SIGINT/SIGTERM stops the run, the full training
    state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from one.
    """
    opts.validate()
    cfg.validate()
    check_output_path(out)
    device = resolve_device(opts.device)
    dist.setup(device)
    seed_everything(opts.seed)
    model = VQVAE(cfg).to(device, memory_format=memory_format(device, opts.amp))
    train_loader = make_loader(
        data.train,
        opts.batch_size,
        shuffle=True,
        seed=opts.seed,
        num_workers=opts.num_workers,
        drop_last=True,
        max_shift=opts.augment_shift,
    )
    val_loader = make_loader(data.val, opts.batch_size * 2, shuffle=False, seed=opts.seed, num_workers=opts.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=opts.lr)
    total_steps = opts.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, opts.warmup_steps))
    scaler = grad_scaler(device, opts.amp)
    # recon/perceptual/adversarial losses; the discriminator and its optimizer live in here
    gan = GanTrainer(
        opts.gan, cfg.in_channels, cfg.image_size, model.decoder.last_layer.weight, opts.lr, device, opts.amp
    )
    preview = torch.stack([data.val[i][0] for i in spread(len(data.val), min(32, len(data.val)))]).to(device)
    state = TrainingState(
        "vqvae",
        out,
        {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "gan": gan},
        run={"config": cfg.to_dict(), "data": data.spec, "options": asdict(opts)},
        save_every=opts.save_every,
    )
    p = state.restore(resume)  # last before the loop: it also restores the RNGs
    net = dist.wrap(model, device)  # DDP under torchrun; the quantizer keeps its buffers in sync itself
    if opts.compile:
        net = torch.compile(net)
    log = JsonlLog(artifact_path(out, "metrics.jsonl"), p.history)

    batches = len(train_loader)
    with StopSignal() as stop:
        for epoch in range(p.epoch + 1, opts.epochs + 1):
            set_epoch(train_loader, epoch, skip_batches=p.batch)
            model.train()
            bar = progress(train_loader, batches, f"vqvae epoch {epoch}/{opts.epochs}", initial=p.batch)
            for images, _ in bar:
                images = images.to(device, non_blocking=True)
                with autocast(device, opts.amp):
                    recon, q = net(images)
                    target = model.to_model(images)
                    recon_loss, step_logs = gan.generator_loss(recon, target, p.step)
                    loss = recon_loss + q.loss
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                check_finite(loss.item(), "the VQ-VAE loss", p.step + 1, state.kept())
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step_logs.update(gan.discriminator_step(recon, target, p.step))
                p.step += 1
                check_finite(step_logs.get("d_loss", 0.0), "the discriminator loss", p.step, state.kept())
                p.count_batch(loss=loss.item(), recon_mse=step_logs["mse"], commitment=q.commitment.item())
                bar.set_postfix(loss=f"{loss.item():.4f}", dead=model.quantizer.dead_codes(), **gan.postfix(step_logs))
                if stop.requested(device):
                    raise state.stop(p, stop, batches)
            train = {k: dist_mean(v, device) for k, v in p.means().items()}
            val = evaluate_vqvae(model, val_loader, device)
            metrics = {
                "epoch": epoch,
                "step": p.step,
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": state.elapsed(),
                **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()},
                **gan.epoch_summary(),
            }
            p.finish_epoch(epoch)
            log.write(metrics)
            report_epoch(metrics)
            if dist.is_main():
                save_vqvae(out, model, data, metrics, opts)
                save_reconstruction_grid(model, preview, artifact_path(out, "recon.png"))
                save_reconstruction_grid(model, preview[:16], artifact_path(out, "epochs") / f"recon_{epoch:03d}.png")
            stopping = stop.requested(device)
            if state.due(epoch, opts.epochs) and not stopping:
                state.save(p)
            if stopping:
                raise state.stop(p, stop, batches)
    dist.barrier()
    if dist.is_main():
        from vqgen.tools.curves import write_curves

        write_curves(artifact_path(out, "metrics.jsonl"), artifact_path(out, "curves.png"))
    return log.records[-1] if log.records else {}


def dist_mean(value: float, device: torch.device) -> float:
    total = dist.all_reduce_sum(torch.tensor(value, device=device, dtype=torch.float64))
    return float(total) / dist.world_size()


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Reconstruction MSE/PSNR (images in [0, 1]) and codebook usage over a whole split."""
    model.eval()
    histogram = CodeHistogram(model.cfg.num_codes, device)
    sq_err = torch.zeros((), device=device, dtype=torch.float64)
    psnr_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    pixels = 0
    for images, _ in loader:
        images = images.to(device)
        recon, q = model(images)
        recon = model.from_model(recon.float())
        sq_err += (recon - images).pow(2).sum()
        psnr_sum += psnr_per_image(recon, images).sum()
        count += images.shape[0]
        pixels = images[0].numel()
        histogram.add(q.indices)
    sq_err, psnr_sum, count = (dist.all_reduce_sum(t) for t in (sq_err, psnr_sum, count))
    histogram.reduce()
    mse = float(sq_err / (count * pixels))
    return {
        "mse": mse,
        "psnr": float(psnr_sum / count),
        "psnr_of_mean_mse": 10 * math.log10(1 / max(mse, 1e-12)),
        **histogram.summary(),
    }


def report_epoch(m: dict[str, Any]) -> None:
    if not dist.is_main():
        return
    from rich.console import Console

    Console(stderr=True).print(
        f"[bold]vqvae epoch {m['epoch']}[/bold]  train mse {m['train_recon_mse']:.5f}  "
        f"val psnr [green]{m['val_psnr']:.2f} dB[/green]  val mse {m['val_mse']:.5f}  "
        f"perplexity {m['val_perplexity']:.1f}  codes used {m['val_codes_used']}/{m['val_num_codes']}  "
        f"({m['elapsed_s']:.0f}s)"
    )
    if "gan_d_loss" in m:
        Console(stderr=True).print(
            f"  gan: g {m['gan_g_loss']:.3f}  d {m['gan_d_loss']:.3f}  adaptive weight {m['gan_adaptive_weight']:.3g}  "
            f"D accuracy real {m['gan_d_acc_real']:.0%} / fake {m['gan_d_acc_fake']:.0%}"
        )


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
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": asdict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)


@torch.no_grad()
def save_reconstruction_grid(model: VQVAE, images: torch.Tensor, path: Path) -> None:
    model.eval()
    recon = model.from_model(model(images)[0].float())
    save_grid(interleave(images, recon), path, nrow=8)
