"""Stage 1: train the VQ-VAE (encoder, codebook, decoder) on images."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.checkpoint import save_vqgen_file
from vqgen.data import ImageData
from vqgen.errors import VQGenError
from vqgen.images import interleave, save_grid
from vqgen.metrics import CodeHistogram, psnr_per_image
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.runtime import (
    JsonlLog,
    autocast,
    check_finite,
    grad_scaler,
    make_loader,
    progress,
    resolve_device,
    seed_everything,
    set_epoch,
    warmup_cosine,
)


@dataclass
class VQVAETrainOptions:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    compile: bool = False
    num_workers: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise VQGenError(f"--epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise VQGenError(f"--lr must be positive, not {self.lr}")


def artifact_path(out: Path, suffix: str) -> Path:
    """checkpoints/vqvae.safetensors -> checkpoints/vqvae.<suffix> (logs and pictures beside it)."""
    return out.with_name(f"{out.stem}.{suffix}")


def train_vqvae(data: ImageData, cfg: VQVAEConfig, opts: VQVAETrainOptions, out: Path) -> dict[str, Any]:
    """Train, validate each epoch, save the checkpoint (and a reconstruction grid) each epoch."""
    opts.validate()
    cfg.validate()
    device = resolve_device(opts.device)
    dist.setup(device)
    seed_everything(opts.seed)
    model = VQVAE(cfg).to(device)
    train_loader = make_loader(
        data.train, opts.batch_size, shuffle=True, seed=opts.seed, num_workers=opts.num_workers, drop_last=True
    )
    val_loader = make_loader(data.val, opts.batch_size * 2, shuffle=False, seed=opts.seed, num_workers=opts.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=opts.lr)
    total_steps = opts.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, opts.warmup_steps))
    scaler = grad_scaler(device, opts.amp)
    # the quantizer's statistics are kept in sync by its own all-reduces, so DDP must not broadcast buffers
    net = DistributedDataParallel(model, broadcast_buffers=False) if dist.is_distributed() else model
    if opts.compile:
        net = torch.compile(net)
    log = JsonlLog(artifact_path(out, "metrics.jsonl"))
    preview = next(iter(DataLoader(data.val, batch_size=32)))[0].to(device)

    step = 0
    metrics: dict[str, Any] = {}
    started = time.time()
    for epoch in range(1, opts.epochs + 1):
        set_epoch(train_loader, epoch)
        model.train()
        sums = {"loss": 0.0, "recon_mse": 0.0, "commitment": 0.0, "n": 0}
        bar = progress(train_loader, len(train_loader), f"vqvae epoch {epoch}/{opts.epochs}")
        for images, _ in bar:
            images = images.to(device, non_blocking=True)
            with autocast(device, opts.amp):
                recon, q = net(images)
                recon_loss = F.mse_loss(recon.float(), model.to_model(images))
                loss = recon_loss + q.loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            check_finite(loss.item(), "the VQ-VAE loss", step)
            sums["loss"] += loss.item()
            sums["recon_mse"] += recon_loss.item()
            sums["commitment"] += q.commitment.item()
            sums["n"] += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", dead=model.quantizer.dead_codes())
        train = {k: dist_mean(v / sums["n"], device) for k, v in sums.items() if k != "n"}
        val = evaluate_vqvae(model, val_loader, device)
        metrics = {
            "epoch": epoch,
            "step": step,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": round(time.time() - started, 1),
            **{f"train_{k}": v for k, v in train.items()},
            **{f"val_{k}": v for k, v in val.items()},
        }
        log.write(metrics)
        report_epoch(metrics)
        if dist.is_main():
            save_vqvae(out, model, data, metrics, opts)
            save_reconstruction_grid(model, preview, artifact_path(out, "recon.png"))
    dist.barrier()
    return metrics


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


def save_vqvae(out: Path, model: VQVAE, data: ImageData, metrics: dict[str, Any], opts: VQVAETrainOptions) -> None:
    meta = {
        "kind": "vqvae",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        "dataset": data.spec,
        "label_names": data.label_names,
        "image": {"channels": data.channels, "size": list(data.image_size), "pixel_range": [0, 1]},
        "model_space": "[-1, 1] (x * 2 - 1); reconstruction loss is MSE there",
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
