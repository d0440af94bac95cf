"""The prior's trainer (stage 3 is ``vqgen.stages.train_prior``): a gated PixelCNN or transformer fit to the code
maps of a code file (the masked prior's loss and validation differ: ``MaskedPriorTrainer``).

The model, its loss (cross-entropy over the K codes at every position), its validation (NLL in
nats and bits per code over the whole split) and what it keeps (the best-validation weights, or
with ``--ema-decay`` the best-validation average of the weights, ``vqgen.train.ema``);
``vqgen.train.loop.fit`` does the training itself. Residual VQ stacks (N, depth, h, w) are read
as (N, h, w*depth) maps (``vqgen.models.rvq.flat_codes``): the PixelCNN models them in raster order
over (position, depth), with an embedding of each column's depth added to its codes'.

The codes of a two-level VQ-VAE get a ``TwoLevelPrior`` (``vqgen.models.hierarchy``): the top and
the bottom prior trained as one model, on the NLL per code of both maps together (also what picks
the best epoch), with each level's NLL logged beside it; one file holds both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqgen import distributed as dist
from vqgen.data.batches import Batches, make_loader
from vqgen.formats.checkpoints import save_prior
from vqgen.formats.codes import CodeFile
from vqgen.config import PriorConfig, PriorTrainOptions, TwoLevelPriorConfig, to_dict
from vqgen.device import memory_format
from vqgen.logs import say
from vqgen.measures import histogram_bits, nats_to_bits
from vqgen.models import build_prior
from vqgen.models.prior import code_nll
from vqgen.models.masked import EVAL_MASK_RATIO, EVAL_MASK_SEED, fixed_ratio_mask, hidden_nll, training_mask
from vqgen.train.ema import WeightEMA
from vqgen.train.loop import StepResult, Trainer, train
from vqgen.train.resume import Progress


class PriorTrainer(Trainer):
    stage, what = "prior", "the prior loss"

    def __init__(self, codes: CodeFile, cfg: PriorConfig | TwoLevelPriorConfig, opts: PriorTrainOptions,
                 device: torch.device, out: Path):
        self.codes, self.cfg, self.opts, self.device, self.out = codes, cfg, opts, device, out
        self.model = build_prior(cfg).to(device, memory_format=memory_format(device, opts.amp))
        # each epoch reads one encoding of every training image (of the image itself or of a shifted copy)
        self.train_batches = make_loader(codes.train, opts.batch_size, shuffle=True, seed=opts.seed, drop_last=True,
                                         variants=codes.variants, num_workers=opts.num_workers)
        self.val_batches = make_loader(codes.val, opts.batch_size * 4, shuffle=False, seed=opts.seed,
                                       num_workers=opts.num_workers)
        # with --ema-decay, validation and the saved file use the average of the weights
        self.ema = WeightEMA(self.model, opts.ema_decay) if opts.ema_decay else None
        self.hooks = {"ema": self.ema} if self.ema else {}
        self.improved = False
        # what a model that knows only how often each code occurs needs: the structure learned is the gap
        self.histogram_bits = histogram_bits(codes.train, codes.val, cfg.num_codes)[0]

    def run_identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "codes": self.codes.identity(), "options": to_dict(self.opts)}

    def labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return y.to(self.device) if self.model.conditional else None

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        if len(batch) == 3:  # two levels
            sums, counts = level_nll_sums(net, batch, self.device, self.model.conditional)
            loss = sum(sums.values()) / sum(counts.values())
            levels = {f"{level}_nll": (sums[level] / counts[level]).detach() for level in sums}
            return StepResult(loss, {"nll": loss.detach(), **levels})
        x, y = batch
        x = x.to(self.device)
        loss = code_nll(net(x, self.labels(y)), x)
        return StepResult(loss, {"nll": loss.detach()})

    @property
    def kept_model(self) -> torch.nn.Module:
        """What is validated and saved: the weights' average with --ema-decay, else the weights."""
        return self.ema.averaged() if self.ema else self.model

    def evaluate(self) -> dict[str, float]:
        return evaluate_prior_levels(self.kept_model, self.val_batches, self.device)

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float], progress: Progress) -> dict[str, Any]:
        self.improved = progress.best is None or val["nll"] < progress.best
        progress.best = val["nll"] if self.improved else progress.best
        levels = {f"{split}_{key.removesuffix('_nll')}_bits_per_code": nats_to_bits(value)
                  for split, numbers in (("train", train), ("val", val))
                  for key, value in numbers.items() if key != "nll"}
        return {
            "train_nll_nats": train["nll"],
            "train_bits_per_code": nats_to_bits(train["nll"]),
            "val_nll_nats": val["nll"],
            "val_bits_per_code": nats_to_bits(val["nll"]),
            "best_val_bits_per_code": nats_to_bits(progress.best),
            "histogram_bits_per_code": self.histogram_bits,
            "learned_bits_per_code": self.histogram_bits - nats_to_bits(val["nll"]),
            **levels,
        }

    def report(self, m: dict[str, Any]) -> None:
        mark = " [green](best, saved)[/green]" if self.improved else ""
        levels = (f"; top {m['val_top_bits_per_code']:.3f}, bottom {m['val_bottom_bits_per_code']:.3f}"
                  if "val_top_bits_per_code" in m else "")
        say(
            f"[bold]prior epoch {m['epoch']}[/bold]  train {m['train_nll_nats']:.4f} nats "
            f"({m['train_bits_per_code']:.3f} bits/code)  val {m['val_nll_nats']:.4f} nats "
            f"([cyan]{m['val_bits_per_code']:.3f} bits/code[/cyan]{levels}, histogram alone "
            f"{m['histogram_bits_per_code']:.3f}){mark}  ({m['elapsed_s']:.0f}s)"
        )

    def save(self, metrics: dict[str, Any], last: bool) -> None:
        if self.improved:
            save_prior(self.out, self.kept_model, self.codes, metrics, self.opts)


class MaskedPriorTrainer(PriorTrainer):
    """The masked prior's: cross-entropy of the hidden codes only, a share of each map hidden by the cosine
    schedule; validated (and the best epoch picked) on hidden codes at the fixed ratio ``EVAL_MASK_RATIO``.
    Its numbers are nats per hidden code, not bits per code of whole maps (``vqgen.models.masked``)."""

    what = "the masked-code loss"

    def loss(self, net: torch.nn.Module, batch: Any, step: int) -> StepResult:
        x, y = batch
        x = x.to(self.device)
        b, h, w = x.shape
        total, count = hidden_nll(net, x, self.labels(y), training_mask(b, h * w, self.device), self.model.mask_code)
        loss = total / count
        return StepResult(loss, {"nll": loss.detach()})

    def evaluate(self) -> dict[str, float]:
        return {"nll": evaluate_masked_prior(self.kept_model, self.val_batches, self.device)}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float], progress: Progress) -> dict[str, Any]:
        self.improved = progress.best is None or val["nll"] < progress.best
        progress.best = val["nll"] if self.improved else progress.best
        return {
            "train_masked_nll_nats": train["nll"],
            "val_masked_nll_nats": val["nll"],
            "best_val_masked_nll_nats": progress.best,
            "val_mask_ratio": EVAL_MASK_RATIO,
        }

    def report(self, m: dict[str, Any]) -> None:
        mark = " [green](best, saved)[/green]" if self.improved else ""
        say(
            f"[bold]prior epoch {m['epoch']}[/bold]  train {m['train_masked_nll_nats']:.4f} nats/hidden code "
            f"(cosine-schedule masks)  val [cyan]{m['val_masked_nll_nats']:.4f} nats/hidden code[/cyan] "
            f"(at mask ratio {m['val_mask_ratio']:g}){mark}  ({m['elapsed_s']:.0f}s)"
        )


def train_prior(codes: CodeFile, cfg: PriorConfig, opts: PriorTrainOptions, out: Path,
                resume: str | Path | None = None) -> dict[str, Any]:
    """Train with cross-entropy, validate each epoch, and keep the best-validation weights in ``out``
    (``vqgen.train.loop.train``: resumable, ``resume`` a path or "auto")."""
    arch = getattr(cfg, "arch", "pixelcnn")  # two levels: PixelCNNs
    opts = opts.settled_for(arch)
    trainer = MaskedPriorTrainer if arch == "masked" else PriorTrainer
    return train(lambda device: trainer(codes, cfg, opts, device, Path(out)), opts, Path(out), resume)


def level_nll_sums(net: torch.nn.Module, batch: Any, device: torch.device,
                   conditional: bool) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Summed NLL (nats) and number of codes of each level of a batch: {"codes"} of one map (codes, labels),
    {"top", "bottom"} of two levels (bottom codes, labels, top codes)."""
    x, y = batch[0].to(device), batch[1].to(device) if conditional else None
    if len(batch) == 2:
        return {"codes": code_nll(net(x, y), x, reduction="sum")}, {"codes": x.numel()}
    top = batch[2].to(device)
    top_logits, bottom_logits = net(top, x, y)
    sums = {"top": code_nll(top_logits, top, reduction="sum"), "bottom": code_nll(bottom_logits, x, reduction="sum")}
    return sums, {"top": top.numel(), "bottom": x.numel()}


@torch.no_grad()
def evaluate_prior_levels(model: torch.nn.Module, batches: Batches, device: torch.device) -> dict[str, float]:
    """Mean NLL in nats per code over a whole split (summed across ranks): ``nll`` over every code, and with
    two levels each level's too (``top_nll``, ``bottom_nll``)."""
    model.eval()
    levels = ("top", "bottom") if getattr(model, "levels", 1) == 2 else ("codes",)
    totals = {level: torch.zeros(2, dtype=torch.float64, device=device) for level in levels}  # (nats, codes)
    for batch in batches:
        sums, counts = level_nll_sums(model, batch, device, model.conditional)
        for level in levels:
            totals[level][0] += sums[level].double()
            totals[level][1] += counts[level]
    reduced = {level: dist.all_reduce_sum(t) for level, t in totals.items()}
    overall = sum(reduced.values())
    result = {"nll": float(overall[0] / overall[1].clamp_min(1))}
    if len(reduced) > 1:
        result.update({f"{level}_nll": float(t[0] / t[1].clamp_min(1)) for level, t in reduced.items()})
    return result


@torch.no_grad()
def evaluate_masked_prior(model: torch.nn.Module, batches: Batches, device: torch.device) -> float:
    """Mean NLL in nats per hidden code of a masked prior over a whole split (summed across ranks), a share
    ``EVAL_MASK_RATIO`` of each map hidden at positions drawn from a fixed seed: the same number every time."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (nats, hidden codes)
    for x, y in batches:
        x = x.to(device)
        b, h, w = x.shape
        hidden = fixed_ratio_mask(b, h * w, EVAL_MASK_RATIO, generator, device)
        total, count = hidden_nll(model, x, y.to(device) if model.conditional else None, hidden, model.mask_code)
        totals += torch.stack([total.double(), torch.tensor(count, dtype=torch.float64, device=device)])
    totals = dist.all_reduce_sum(totals)
    return float(totals[0] / totals[1].clamp_min(1))


def evaluate_prior(model: torch.nn.Module, batches: Batches, device: torch.device) -> float:
    """Mean NLL in nats per code over a whole split, every level's codes together."""
    return evaluate_prior_levels(model, batches, device)["nll"]


