"""Stage 3: fit a prior (gated PixelCNN or transformer) to the code maps of a code file.

The model, its loss (cross-entropy over the K codes at every position), its validation (NLL in
nats and bits per code over the whole split) and what it keeps (the best-validation weights);
``vqgen.train.loop.fit`` does the training itself. Residual VQ stacks (N, depth, h, w) are read
as (N, h, w*depth) maps (``vqgen.models.rvq.flat_codes``): the PixelCNN models them in raster order
over (position, depth), with an embedding of each column's depth added to its codes'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.batches import Batches, make_loader
from vqgen.checkpoint import check_output_path, load_vqgen_file, save_vqgen_file
from vqgen.config import PriorConfig, PriorTrainOptions, to_dict
from vqgen.device import memory_format
from vqgen.errors import VQGenError
from vqgen.logs import say
from vqgen.eval.metrics import histogram_bits_per_code, nats_to_bits
from vqgen.models import CodePrior, build_prior
from vqgen.models.rvq import flat_codes, prior_map_shape
from vqgen.train.loop import StepResult, Trainer, fit, prepare_run
from vqgen.train.resume import Progress


@dataclass
class CodeFile:
    path: Path
    meta: dict[str, Any]
    train: TensorDataset
    val: TensorDataset

    @property
    def depth(self) -> int:
        return int(self.meta.get("code_depth") or 1)

    @property
    def prior_latent_shape(self) -> tuple[int, int]:
        """The maps the prior models: (h, w), or (h, w*depth) for stacks."""
        return prior_map_shape(tuple(self.meta["latent_shape"]), self.depth)

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("label_names")) and bool((self.train.tensors[1] >= 0).all())

    def identity(self) -> dict[str, Any]:
        """What a resumed prior run must find unchanged in its code file."""
        keys = ("num_codes", "latent_shape", "vqvae_sha256", "label_names", "num_train", "num_val")
        return {k: self.meta.get(k) for k in keys}


def load_codes(path: Path) -> CodeFile:
    """Read and check a code file -> datasets of (code map long (h, w), or (h, w*depth) for stacks, label long)."""
    tensors, meta = load_vqgen_file(path, "codes")
    k, depth = meta["num_codes"], meta.get("code_depth") or 1
    shape = tuple(meta["latent_shape"]) if depth == 1 else (depth, *meta["latent_shape"])
    splits = []
    for split in ("train", "val"):
        try:
            codes, labels = tensors[f"{split}_codes"].long(), tensors[f"{split}_labels"].long()
        except KeyError as e:
            raise VQGenError(f"{path}: code file lacks the tensor {e.args[0]}") from e
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise VQGenError(f"{path}: {split} codes lie outside 0..{k - 1}")
        if codes.shape[1:] != shape or len(labels) != len(codes):
            raise VQGenError(f"{path}: {split} tensors do not match the recorded shape {list(shape)}")
        splits.append(TensorDataset(flat_codes(codes), labels))
    if len(splits[0]) == 0:
        raise VQGenError(f"{path}: the code file holds no training codes")
    return CodeFile(path, meta, *splits)


class PriorTrainer(Trainer):
    stage, what = "prior", "the prior loss"

    def __init__(self, codes: CodeFile, cfg: PriorConfig, opts: PriorTrainOptions, device: torch.device, out: Path):
        self.codes, self.cfg, self.opts, self.device, self.out = codes, cfg, opts, device, out
        self.model = build_prior(cfg).to(device, memory_format=memory_format(device, opts.amp))
        self.train_batches = make_loader(codes.train, opts.batch_size, shuffle=True, seed=opts.seed, drop_last=True)
        self.val_batches = make_loader(codes.val, opts.batch_size * 4, shuffle=False, seed=opts.seed)
        self.hooks = {}
        self.improved = False
        # what a model that knows only how often each code occurs needs: the structure learned is the gap
        self.histogram_bits = histogram_bits_per_code(codes.train.tensors[0], codes.val.tensors[0], cfg.num_codes)

    def run_identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "codes": self.codes.identity(), "options": to_dict(self.opts)}

    def labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return y.to(self.device) if self.model.conditional else None

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        x, y = batch
        x = x.to(self.device)
        loss = F.cross_entropy(net(x, self.labels(y)).float(), x)
        return StepResult(loss, {"nll": loss.item()})

    def evaluate(self) -> dict[str, float]:
        return {"nll": evaluate_prior(self.model, self.val_batches, self.device)}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float], progress: Progress) -> dict[str, Any]:
        self.improved = progress.best is None or val["nll"] < progress.best
        progress.best = val["nll"] if self.improved else progress.best
        return {
            "train_nll_nats": train["nll"],
            "train_bits_per_code": nats_to_bits(train["nll"]),
            "val_nll_nats": val["nll"],
            "val_bits_per_code": nats_to_bits(val["nll"]),
            "best_val_bits_per_code": nats_to_bits(progress.best),
            "histogram_bits_per_code": self.histogram_bits,
            "learned_bits_per_code": self.histogram_bits - nats_to_bits(val["nll"]),
        }

    def report(self, m: dict[str, Any]) -> None:
        mark = " [green](best, saved)[/green]" if self.improved else ""
        say(
            f"[bold]prior epoch {m['epoch']}[/bold]  train {m['train_nll_nats']:.4f} nats "
            f"({m['train_bits_per_code']:.3f} bits/code)  val {m['val_nll_nats']:.4f} nats "
            f"([cyan]{m['val_bits_per_code']:.3f} bits/code[/cyan], histogram alone {m['histogram_bits_per_code']:.3f})"
            f"{mark}  ({m['elapsed_s']:.0f}s)"
        )

    def save(self, metrics: dict[str, Any], last: bool) -> None:
        if self.improved:
            save_prior(self.out, self.model, self.codes, metrics, self.opts)


def train_prior(
    codes: CodeFile, cfg: PriorConfig, opts: PriorTrainOptions, out: Path, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train with cross-entropy, validate each epoch, and keep the best-validation weights in ``out``.

    Every ``opts.save_every`` epochs, and when SIGINT/SIGTERM stops the run, the full training
    state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from one.
    """
    device = prepare_run(opts, out, cfg)
    return fit(PriorTrainer(codes, cfg, opts, device, Path(out)), opts, Path(out), resume)


def train_prior_on(codes_path: Path, cfg: PriorConfig, opts: PriorTrainOptions, out: Path,
                   conditional: bool | None = None, resume: str | None = None) -> dict[str, Any]:
    """``vqgen train-prior``: read the code file, size the prior to it, then train.

    ``conditional`` None: class-conditional exactly when the codes have labels.
    """
    codes = load_codes(codes_path)
    check_output_path(out)
    if conditional is None:
        conditional = codes.labelled
    elif conditional and not codes.labelled:
        raise VQGenError(f"{codes_path}: --conditional needs labelled codes, but these have no labels")
    cfg.num_codes, cfg.latent_shape, cfg.code_depth = codes.meta["num_codes"], codes.prior_latent_shape, codes.depth
    cfg.num_classes = len(codes.meta["label_names"]) if conditional else 0
    cfg = cfg.with_label_dropout_for(conditional)
    cfg.validate()
    kind = f"conditional on {cfg.num_classes} classes" if conditional else "unconditional"
    say(f"prior: {len(codes.train)} train / {len(codes.val)} val code maps, {kind}")
    return train_prior(codes, cfg, opts, out, resume)


@torch.no_grad()
def evaluate_prior(model: CodePrior, batches: Batches, device: torch.device) -> float:
    """Mean NLL in nats per code over a whole split (summed across ranks)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        x = x.to(device)
        y = y.to(device) if model.conditional else None
        total += F.cross_entropy(model(x, y).float(), x, reduction="sum").double()
        count += x.numel()
    total, count = dist.all_reduce_sum(total), dist.all_reduce_sum(count)
    return float(total / count.clamp_min(1))


def save_prior(out: Path, model: CodePrior, codes: CodeFile, metrics: dict[str, Any],
               opts: PriorTrainOptions) -> None:
    keep = ("vqvae_path", "vqvae_sha256", "dataset", "label_names", "image", "latent_shape", "num_codes", "code_depth")
    meta = {
        "kind": "prior",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        **{k: codes.meta.get(k) for k in keep},
        "codes_path": str(codes.path.resolve()),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": to_dict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)
