"""The one training loop: epochs, resume, stop signals, finite checks, AMP, DDP, logs, curves and saving.

Each model's trainer (``vqgen.train.vqvae``, ``.prior``, ``.classifier``) is a ``Trainer``: its model,
its batches, the loss of one batch, its evaluation and what it writes after an epoch. ``fit`` runs
it, the same way for every model:

    for each epoch: for each batch: loss (under autocast) -> backward -> finite check -> optimizer,
    scheduler -> hooks (e.g. the GAN's discriminator update) -> stop check;
    then evaluate -> metrics log -> save -> resumable state; at the end the curves.

Optimizer (Adam), LR schedule (linear warm-up, cosine decay) and fp16 loss scaling are the same
for every trainer. Everything stateful goes into the resume file (``vqgen.train.resume``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn as nn

from vqgen import distributed as dist
from vqgen.data.batches import Batches
from vqgen.config import TrainOptions
from vqgen.formats.files import check_output_path
from vqgen.device import autocast, grad_scaler, resolve_device, seed_everything
from vqgen.errors import VQGenError
from vqgen.logs import JsonlLog, progress
from vqgen.train.resume import Progress, TrainingState
from vqgen.train.signals import StopSignal


def artifact_path(out: Path, suffix: str) -> Path:
    """checkpoints/vqvae.safetensors -> checkpoints/vqvae.<suffix> (logs and pictures beside it)."""
    return out.with_name(f"{out.stem}.{suffix}")


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.05):
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))

    return factor


class NonFiniteLoss(VQGenError):
    """A loss became NaN or infinite; ``fit`` adds what was kept to the message."""


LOG_EVERY = 25  # steps between reads of the running numbers from the device (each read waits for the GPU)
NO_STEP = 2**62  # "no non-finite step yet", larger than any step


class StepNumbers:
    """The logged numbers of the steps since the last read, and the first step whose loss was not finite,
    kept on the device so that a step never waits for the GPU; ``read`` fetches both in one transfer.

    The check of a loss is thus late by up to LOG_EVERY steps, but ``fit`` reads before every evaluation
    and every save, so nothing non-finite is ever saved. Under torchrun ``read`` is a collective: every
    rank stops at the same (earliest) step with the same message.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.bad: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # what -> (first bad step, its value)

    def add(self, logged: dict[str, torch.Tensor]) -> None:
        for key, value in logged.items():
            value = torch.as_tensor(value, device=self.device).detach().double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def watch(self, loss: torch.Tensor, what: str, step: int) -> None:
        """Note ``loss`` (of optimizer step ``step``, counted from 1) if it is NaN or infinite."""
        first, value = self.bad.get(what) or (torch.full((), NO_STEP, device=self.device),
                                               torch.zeros((), device=self.device))
        here = ~torch.isfinite(loss.detach()) & (first == NO_STEP)
        self.bad[what] = (torch.where(here, step, first), torch.where(here, loss.detach().float(), value))

    def read(self) -> dict[str, float]:
        """The sums since the last read (then start afresh); raise NonFiniteLoss for the earliest bad step."""
        names, whats = list(self.sums), list(self.bad)
        firsts = [self.bad[w][0] for w in whats]
        if dist.is_distributed() and firsts:
            firsts = list(dist.all_reduce_min(torch.stack(firsts)).unbind())
        parts = [self.sums[k] for k in names] + [t.double() for t in firsts] + [self.bad[w][1].double() for w in whats]
        numbers = torch.stack(parts).tolist() if parts else []
        self.sums = {}
        steps, values = numbers[len(names):len(names) + len(whats)], numbers[len(names) + len(whats):]
        bad = [(int(step), what, value) for step, what, value in zip(steps, whats, values) if step < NO_STEP]
        if bad:
            step, what, value = min(bad)
            shown = value if not math.isfinite(value) else "NaN or infinite on another process"
            raise NonFiniteLoss(f"{what} became {shown} at step {step}")
        return dict(zip(names, numbers))


def dist_mean(value: float, device: torch.device) -> float:
    """The mean of a per-process number over all processes."""
    total = dist.all_reduce_sum(torch.tensor(value, device=device, dtype=torch.float64))
    return float(total) / dist.world_size()


@dataclass
class StepResult:
    loss: torch.Tensor  # what is backpropagated
    logged: dict[str, torch.Tensor]  # detached scalars, averaged over the epoch: train_<key> in the metrics
    outputs: tuple = ()  # what the hooks need of this step (the GAN hook: reconstruction and target)


class Hook(Protocol):
    """Something that acts after every optimizer step and keeps state of its own (the GAN's discriminator)."""

    def after_step(self, result: StepResult, step: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Act on the step; returns its own losses to check for NaN, by what they are ("the discriminator loss")."""
        ...

    def epoch_summary(self) -> dict[str, float]: ...
    def postfix(self) -> dict[str, str]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    """What one kind of model brings to ``fit``; subclasses set the attributes and fill in the methods."""

    stage: str  # names the run: "vqvae", "prior", "classifier"
    what: str  # "the VQ-VAE loss": named when the loss becomes NaN
    model: nn.Module
    device: torch.device
    train_batches: Batches
    hooks: dict[str, Hook]  # resumable parts besides model, optimizer, schedule and scaler (may be empty)

    def run_identity(self) -> dict[str, Any]:
        """What a resumed run must find unchanged (model config, data, options)."""
        raise NotImplementedError

    def start(self, total_steps: int) -> None:
        """Called once the schedule's length is known, before the first step."""

    def loss(self, net: nn.Module, batch: Any, step: int) -> StepResult:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float], progress: Progress) -> dict[str, Any]:
        """The epoch's record (after epoch, step, lr and elapsed_s); default: train_* and val_* numbers."""
        return {**{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}}

    def report(self, metrics: dict[str, Any]) -> None:
        """One console line per epoch (rank 0)."""

    def postfix(self) -> dict[str, Any]:
        """Extra progress-bar fields, read once per LOG_EVERY steps."""
        return {}

    def save(self, metrics: dict[str, Any], last: bool) -> None:
        """Write the checkpoint and pictures after an epoch (called on rank 0 only)."""
        raise NotImplementedError


def prepare_run(opts: TrainOptions, out: Path) -> torch.device:
    """What every training run does before building its trainer (its options checked by the stage): check the
    output path, pick the device, join torchrun's process group, seed every generator. Returns the device."""
    check_output_path(out)
    device = resolve_device(opts.device)
    dist.setup(device)
    seed_everything(opts.seed)
    return device


def train(make_trainer: Callable[[torch.device], Trainer], opts: TrainOptions, out: Path,
          resume: str | Path | None = None, curves: bool = True) -> dict[str, Any]:
    """Prepare the run (``prepare_run``), build the trainer on its device, and ``fit`` it.

    Every ``opts.save_every`` epochs, and when SIGINT/SIGTERM stops the run, the full training
    state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from one.
    """
    trainer = make_trainer(prepare_run(opts, out))
    return fit(trainer, opts, Path(out), resume, curves)


def fit(trainer: Trainer, opts: TrainOptions, out: Path, resume: str | Path | None = None,
        curves: bool = True) -> dict[str, Any]:
    """Train ``trainer`` for ``opts.epochs``; returns the last epoch's metrics.

    Every ``opts.save_every`` epochs, after the last one and when SIGINT/SIGTERM stops the run, the
    full training state goes to OUT.resume.safetensors; ``resume`` (a path or "auto") continues from it.
    """
    model, device, batches = trainer.model, trainer.device, trainer.train_batches
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=opts.lr)
    total_steps = opts.epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, opts.warmup_steps))
    scaler = grad_scaler(device, opts.amp)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, **trainer.hooks}
    state = TrainingState(trainer.stage, out, parts, run=trainer.run_identity(), save_every=opts.save_every)
    p = state.restore(resume)  # last before the loop: it also restores the RNGs
    trainer.start(total_steps)
    net = dist.wrap(model, device)  # DDP under torchrun
    if opts.compile:
        net = torch.compile(net)
    log = JsonlLog(artifact_path(out, "metrics.jsonl"), p.history)

    with StopSignal() as stop:
        for epoch in range(p.epoch + 1, opts.epochs + 1):
            batches.set_epoch(epoch, skip=p.batch)
            model.train()
            bar = progress(batches, len(batches), f"{trainer.stage} epoch {epoch}/{opts.epochs}", initial=p.batch)
            numbers = StepNumbers(device)
            for batch in bar:
                try:
                    result = train_step(trainer, net, batch, p.step, optimizer, scheduler, scaler, opts.amp, numbers)
                    p.step += 1
                    p.batch += 1
                    numbers.add(result.logged)
                    stopping = stop.requested(device)
                    if p.step % LOG_EVERY == 0 or p.batch == len(batches) or stopping:
                        read_numbers(numbers, p, trainer, bar)
                except NonFiniteLoss as e:
                    raise VQGenError(f"{e}; stopping ({state.kept()})") from None
                if stopping:
                    raise state.stop(p, stop, len(batches))
            train = {k: dist_mean(v, device) for k, v in p.means().items()}
            metrics = {"epoch": epoch, "step": p.step, "lr": scheduler.get_last_lr()[0], "elapsed_s": state.elapsed()}
            metrics.update(trainer.epoch_metrics(train, trainer.evaluate(), p))
            for hook in trainer.hooks.values():
                metrics.update(hook.epoch_summary())
            p.finish_epoch(epoch)
            log.write(metrics)
            if dist.is_main():
                trainer.report(metrics)
                trainer.save(metrics, last=epoch == opts.epochs)
            stopping = stop.requested(device)
            if state.due(epoch, opts.epochs) and not stopping:
                state.save(p)
            if stopping:
                raise state.stop(p, stop, len(batches))
    dist.barrier()
    if curves and dist.is_main():
        from vqgen.tools.curves import write_curves

        write_curves(artifact_path(out, "metrics.jsonl"), artifact_path(out, "curves.png"))
    return log.records[-1] if log.records else {}


def read_numbers(numbers: StepNumbers, p: Progress, trainer: Trainer, bar: Any) -> None:
    """Fetch the running numbers from the device into the epoch's sums (checking the losses), and show them."""
    for key, value in numbers.read().items():
        p.sums[key] = p.sums.get(key, 0.0) + value
    shown = {k: f"{v:.4f}" for k, v in list(p.means().items())[:1]}
    bar.set_postfix(**shown, **trainer.postfix(), **{k: v for h in trainer.hooks.values() for k, v in h.postfix().items()})


def train_step(trainer: Trainer, net: nn.Module, batch: Any, step: int, optimizer: torch.optim.Optimizer,
               scheduler: Any, scaler: torch.amp.GradScaler, amp: str, numbers: StepNumbers) -> StepResult:
    """One optimizer step (``step`` counts the steps before it), then the hooks; their losses go to ``numbers``
    to be checked for NaN without waiting for the device."""
    device = trainer.device
    with autocast(device, amp):
        result = trainer.loss(net, batch, step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(result.loss).backward()
    numbers.watch(result.loss, trainer.what, step + 1)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    for hook in trainer.hooks.values():
        for what, loss in (hook.after_step(result, step, device) or {}).items():
            numbers.watch(loss, what, step + 1)
    return result
