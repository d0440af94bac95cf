"""Stage 3: fit a gated PixelCNN prior to the code maps of a code file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.checkpoint import check_output_path, load_vqgen_file, save_vqgen_file
from vqgen.errors import VQGenError
from vqgen.eval.metrics import nats_to_bits
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
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
from vqgen.stages.train_vqvae import artifact_path, dist_mean


@dataclass
class PriorTrainOptions:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    compile: bool = False
    save_every: int = 1  # epochs between resumable training states

    def validate(self) -> None:
        if self.epochs < 1:
            raise VQGenError(f"--epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise VQGenError(f"--lr must be positive, not {self.lr}")
        if self.save_every < 1:
            raise VQGenError(f"--save-every must be at least 1, not {self.save_every}")


@dataclass
class CodeFile:
    path: Path
    meta: dict[str, Any]
    train: TensorDataset
    val: TensorDataset

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("label_names")) and bool((self.train.tensors[1] >= 0).all())

    def identity(self) -> dict[str, Any]:
        """What a resumed prior run must find unchanged in its code file."""
        keys = ("num_codes", "latent_shape", "vqvae_sha256", "label_names", "num_train", "num_val")
        return {k: self.meta.get(k) for k in keys}


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
    codes: CodeFile, cfg: PixelCNNConfig, opts: PriorTrainOptions, out: Path, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train with cross-entropy, validate each epoch, and keep the best-validation weights in ``out``.

    Every ``opts.save_every`` epochs, and when SIGINT/SIGTERM stops the run, the full training
    state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from one.
    """
    opts.validate()
    cfg.validate()
    check_output_path(out)
    device = resolve_device(opts.device)
    dist.setup(device)
    seed_everything(opts.seed)
    model = GatedPixelCNN(cfg).to(device, memory_format=memory_format(device, opts.amp))
    train_loader = make_loader(codes.train, opts.batch_size, shuffle=True, seed=opts.seed, drop_last=True)
    val_loader = make_loader(codes.val, opts.batch_size * 4, shuffle=False, seed=opts.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    total_steps = opts.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, opts.warmup_steps))
    scaler = grad_scaler(device, opts.amp)
    state = TrainingState(
        "prior",
        out,
        {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler},
        run={"config": cfg.to_dict(), "codes": codes.identity(), "options": asdict(opts)},
        save_every=opts.save_every,
    )
    p = state.restore(resume)  # last before the loop: it also restores the RNGs
    net = dist.wrap(model, device)
    if opts.compile:
        net = torch.compile(net)
    log = JsonlLog(artifact_path(out, "metrics.jsonl"), p.history)
    conditional = model.conditional

    batches = len(train_loader)
    with StopSignal() as stop:
        for epoch in range(p.epoch + 1, opts.epochs + 1):
            set_epoch(train_loader, epoch, skip_batches=p.batch)
            model.train()
            bar = progress(train_loader, batches, f"prior epoch {epoch}/{opts.epochs}", initial=p.batch)
            for x, y in bar:
                x, y = x.to(device), y.to(device) if conditional else None
                with autocast(device, opts.amp):
                    loss = F.cross_entropy(net(x, y).float(), x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                check_finite(loss.item(), "the prior loss", p.step + 1, state.kept())
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                p.step += 1
                p.count_batch(nll=loss.item())
                bar.set_postfix(nll=f"{loss.item():.3f}")
                if stop.requested(device):
                    raise state.stop(p, stop, batches)
            train_nll = dist_mean(p.means()["nll"], device)
            val_nll = evaluate_prior(model, val_loader, device)
            improved = p.best is None or val_nll < p.best
            p.best = val_nll if improved else p.best
            metrics = {
                "epoch": epoch,
                "step": p.step,
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": state.elapsed(),
                "train_nll_nats": train_nll,
                "train_bits_per_code": nats_to_bits(train_nll),
                "val_nll_nats": val_nll,
                "val_bits_per_code": nats_to_bits(val_nll),
                "best_val_bits_per_code": nats_to_bits(p.best),
            }
            p.finish_epoch(epoch)
            log.write(metrics)
            report_epoch(metrics, improved)
            if improved and dist.is_main():
                save_prior(out, model, codes, metrics, opts)
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
