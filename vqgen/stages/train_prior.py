"""Stage 3: fit a gated PixelCNN prior to the code maps of a code file."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.checkpoint import load_vqgen_file, save_vqgen_file
from vqgen.errors import VQGenError
from vqgen.metrics import nats_to_bits
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
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
from vqgen.stages.train_vqvae import artifact_path, dist_mean


@dataclass
class PriorTrainOptions:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    compile: bool = False

    def validate(self) -> None:
        if self.epochs < 1:
            raise VQGenError(f"--epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise VQGenError(f"--lr must be positive, not {self.lr}")


@dataclass
class CodeFile:
    path: Path
    meta: dict[str, Any]
    train: TensorDataset
    val: TensorDataset

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("label_names")) and bool((self.train.tensors[1] >= 0).all())


def load_codes(path: Path) -> CodeFile:
    """Read and check a code file -> datasets of (codes long (h, w), label long)."""
    tensors, meta = load_vqgen_file(path, "codes")
    k = meta["num_codes"]
    splits = []
    for split in ("train", "val"):
        try:
            codes, labels = tensors[f"{split}_codes"].long(), tensors[f"{split}_labels"].long()
        except KeyError as e:
            raise VQGenError(f"{path}: code file lacks the tensor {e.args[0]}") from e
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise VQGenError(f"{path}: {split} codes lie outside 0..{k - 1}")
        if codes.shape[1:] != tuple(meta["latent_shape"]) or len(labels) != len(codes):
            raise VQGenError(f"{path}: {split} tensors do not match the recorded latent shape {meta['latent_shape']}")
        splits.append(TensorDataset(codes, labels))
    if len(splits[0]) == 0:
        raise VQGenError(f"{path}: the code file holds no training codes")
    return CodeFile(path, meta, *splits)


def train_prior(
    codes: CodeFile, cfg: PixelCNNConfig, opts: PriorTrainOptions, out: Path
) -> dict[str, Any]:
    """Train with cross-entropy, validate each epoch, and keep the best-validation weights in ``out``."""
    opts.validate()
    cfg.validate()
    device = resolve_device(opts.device)
    dist.setup(device)
    seed_everything(opts.seed)
    model = GatedPixelCNN(cfg).to(device)
    train_loader = make_loader(codes.train, opts.batch_size, shuffle=True, seed=opts.seed, drop_last=True)
    val_loader = make_loader(codes.val, opts.batch_size * 4, shuffle=False, seed=opts.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    total_steps = opts.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, opts.warmup_steps))
    scaler = grad_scaler(device, opts.amp)
    net = DistributedDataParallel(model) if dist.is_distributed() else model
    if opts.compile:
        net = torch.compile(net)
    log = JsonlLog(artifact_path(out, "metrics.jsonl"))
    conditional = model.conditional

    best = float("inf")
    step = 0
    metrics: dict[str, Any] = {}
    started = time.time()
    for epoch in range(1, opts.epochs + 1):
        set_epoch(train_loader, epoch)
        model.train()
        total, batches = 0.0, 0
        bar = progress(train_loader, len(train_loader), f"prior epoch {epoch}/{opts.epochs}")
        for x, y in bar:
            x, y = x.to(device), y.to(device) if conditional else None
            with autocast(device, opts.amp):
                loss = F.cross_entropy(net(x, y).float(), x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            check_finite(loss.item(), "the prior loss", step)
            total += loss.item()
            batches += 1
            bar.set_postfix(nll=f"{loss.item():.3f}")
        train_nll = dist_mean(total / batches, device)
        val_nll = evaluate_prior(model, val_loader, device)
        metrics = {
            "epoch": epoch,
            "step": step,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": round(time.time() - started, 1),
            "train_nll_nats": train_nll,
            "train_bits_per_code": nats_to_bits(train_nll),
            "val_nll_nats": val_nll,
            "val_bits_per_code": nats_to_bits(val_nll),
        }
        improved = val_nll < best
        best = min(best, val_nll)
        metrics["best_val_bits_per_code"] = nats_to_bits(best)
        log.write(metrics)
        report_epoch(metrics, improved)
        if improved and dist.is_main():
            save_prior(out, model, codes, metrics, opts)
    dist.barrier()
    return metrics


@torch.no_grad()
def evaluate_prior(model: GatedPixelCNN, loader: DataLoader, device: torch.device) -> float:
    """Mean NLL in nats per code over a whole split (summed across ranks)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        x = x.to(device)
        y = y.to(device) if model.conditional else None
        total += F.cross_entropy(model(x, y).float(), x, reduction="sum").double()
        count += x.numel()
    total, count = dist.all_reduce_sum(total), dist.all_reduce_sum(count)
    return float(total / count.clamp_min(1))


def report_epoch(m: dict[str, Any], improved: bool) -> None:
    if not dist.is_main():
        return
    from rich.console import Console

    mark = " [green](best, saved)[/green]" if improved else ""
    Console(stderr=True).print(
        f"[bold]prior epoch {m['epoch']}[/bold]  train {m['train_nll_nats']:.4f} nats "
        f"({m['train_bits_per_code']:.3f} bits/code)  val {m['val_nll_nats']:.4f} nats "
        f"([cyan]{m['val_bits_per_code']:.3f} bits/code[/cyan]){mark}  ({m['elapsed_s']:.0f}s)"
    )


def save_prior(out: Path, model: GatedPixelCNN, codes: CodeFile, metrics: dict[str, Any], opts) -> None:
    keep = ("vqvae_path", "vqvae_sha256", "dataset", "label_names", "image", "latent_shape", "num_codes")
    meta = {
        "kind": "prior",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        **{k: codes.meta.get(k) for k in keep},
        "codes_path": str(codes.path.resolve()),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": asdict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)
