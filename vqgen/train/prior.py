"""Stage 3: fit a prior (gated PixelCNN or transformer) to the code maps of a code file.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.data.batches import Batches, make_loader
from vqgen.checkpoint import check_output_path, load_vqgen_file, save_vqgen_file
from vqgen.config import PriorConfig, PriorTrainOptions, TwoLevelPriorConfig, to_dict
from vqgen.device import memory_format
from vqgen.errors import VQGenError
from vqgen.logs import say
from vqgen.eval.metrics import histogram_bits_per_code, nats_to_bits
from vqgen.models import CodePrior, build_prior
from vqgen.models.rvq import flat_codes, prior_map_shape
from vqgen.train.ema import WeightEMA
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

    @property
    def levels(self) -> int:
        return self.meta.get("levels", 1)

    @property
    def variants(self) -> int:
        """Encodings of each training image: the image's own and those of its shifted copies (``ExtractOptions``)."""
        return 1 + int((self.meta.get("augment") or {}).get("augment_copies", 0))

    def identity(self) -> dict[str, Any]:
        """What a resumed prior run must find unchanged in its code file."""
        keys = ("num_codes", "latent_shape", "vqvae_sha256", "label_names", "num_train", "num_val")
        return {k: self.meta.get(k) for k in keys}


def code_split(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], split: str) -> TensorDataset:
    """One split of a code file, checked: (code map long (h, w), or (h, w*depth) for residual VQ stacks, label
    long), and with two levels the top map (ht, wt) third."""
    k, depth = meta["num_codes"], meta.get("code_depth") or 1
    names = [("codes", "latent_shape")] + ([("codes_top", "latent_shape_top")] if meta.get("levels", 1) == 2 else [])
    try:
        labels = tensors[f"{split}_labels"].long()
        maps = [(tensors[f"{split}_{name}"].long(), meta[shape]) for name, shape in names]
    except KeyError as e:
        raise VQGenError(f"{path}: code file lacks the tensor or entry {e.args[0]}") from e
    for codes, shape in maps:
        shape = tuple(shape) if depth == 1 else (depth, *shape)
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise VQGenError(f"{path}: {split} codes lie outside 0..{k - 1}")
        if codes.shape[1:] != shape or len(labels) != len(codes):
            raise VQGenError(f"{path}: {split} tensors do not match the recorded shape {list(shape)}")
    return TensorDataset(flat_codes(maps[0][0]), labels, *(flat_codes(codes) for codes, _ in maps[1:]))


def load_codes(path: Path) -> CodeFile:
    """Read and check a code file -> datasets of (code map long (h, w) or (h, w*depth), label long[, top codes
    long (ht, wt)])."""
    tensors, meta = load_vqgen_file(path, "codes")
    splits = [code_split(path, tensors, meta, split) for split in ("train", "val")]
    if len(splits[0]) == 0:
        raise VQGenError(f"{path}: the code file holds no training codes")
    codes = CodeFile(path, meta, *splits)
    if len(codes.train) % codes.variants:
        raise VQGenError(f"{path}: {len(codes.train)} training maps are not {codes.variants} encodings of each image")
    return codes


def histogram_bits(train: TensorDataset, val: TensorDataset, num_codes: int) -> tuple[float, dict[str, float]]:
    """Bits per ``val`` code of the histogram-only model of the ``train`` codes (datasets of ``load_codes``):
    (over every code, {}); with two levels one histogram per level, (averaged over every code of both
    maps, {"top": ..., "bottom": ...})."""
    if len(train.tensors) == 2:
        return histogram_bits_per_code(train.tensors[0], val.tensors[0], num_codes), {}
    levels = {name: (histogram_bits_per_code(train.tensors[i], val.tensors[i], num_codes), val.tensors[i].numel())
              for name, i in (("top", 2), ("bottom", 0))}
    overall = sum(bits * n for bits, n in levels.values()) / max(1, sum(n for _, n in levels.values()))
    return overall, {name: bits for name, (bits, _) in levels.items()}


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
            levels = {f"{level}_nll": (sums[level] / counts[level]).item() for level in sums}
            return StepResult(loss, {"nll": loss.item(), **levels})
        x, y = batch
        x = x.to(self.device)
        loss = F.cross_entropy(net(x, self.labels(y)).float(), x)
        return StepResult(loss, {"nll": loss.item()})

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
    levels = ", top and bottom priors" if codes.levels == 2 else ""
    images = len(codes.train) // codes.variants
    copies = f" (each of {images} images and {codes.variants - 1} shifted copies)" if codes.variants > 1 else ""
    say(f"prior: {len(codes.train)} train{copies} / {len(codes.val)} val code maps, {kind}{levels}")
    if codes.levels == 2:
        if cfg.arch != "pixelcnn":
            raise VQGenError(f"{codes_path}: the codes of a two-level VQ-VAE take --arch pixelcnn priors (its bottom "
                             f"prior is conditioned on the top map), not --arch {cfg.arch}")
        return train_prior(codes, TwoLevelPriorConfig.for_maps(cfg, codes.meta["latent_shape_top"]), opts, out, resume)
    return train_prior(codes, cfg, opts, out, resume)


def level_nll_sums(net: torch.nn.Module, batch: Any, device: torch.device,
                   conditional: bool) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Summed NLL (nats) and number of codes of each level of a batch: {"codes"} of one map (codes, labels),
    {"top", "bottom"} of two levels (bottom codes, labels, top codes)."""
    x, y = batch[0].to(device), batch[1].to(device) if conditional else None
    if len(batch) == 2:
        return {"codes": F.cross_entropy(net(x, y).float(), x, reduction="sum")}, {"codes": x.numel()}
    top = batch[2].to(device)
    top_logits, bottom_logits = net(top, x, y)
    sums = {"top": F.cross_entropy(top_logits.float(), top, reduction="sum"),
            "bottom": F.cross_entropy(bottom_logits.float(), x, reduction="sum")}
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


def evaluate_prior(model: torch.nn.Module, batches: Batches, device: torch.device) -> float:
    """Mean NLL in nats per code over a whole split, every level's codes together."""
    return evaluate_prior_levels(model, batches, device)["nll"]


def save_prior(out: Path, model: torch.nn.Module, codes: CodeFile, metrics: dict[str, Any],
               opts: PriorTrainOptions) -> None:
    keep = ("vqvae_path", "vqvae_sha256", "dataset", "label_names", "image", "latent_shape", "num_codes", "code_depth")
    meta = {
        "kind": "prior",
        "vqgen_version": __version__,
        "config": model.cfg.to_dict(),
        **{k: codes.meta.get(k) for k in keep},
        "levels": codes.levels,
        **({"latent_shape_top": codes.meta["latent_shape_top"]} if codes.levels == 2 else {}),
        "codes_path": str(codes.path.resolve()),
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "train_options": to_dict(opts),
    }
    save_vqgen_file(out, model.state_dict(), meta)
