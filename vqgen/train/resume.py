"""Resumable training: everything a run needs to continue exactly where it stopped, in one file.

The resume file sits beside the checkpoint (``checkpoints/vqvae.safetensors`` ->
``checkpoints/vqvae.resume.safetensors``) and is a vqgen file of kind ``resume``:

* tensors: the ``state_dict`` of every stateful part of the run (model with the quantizer's EMA
  and dead-code buffers, optimizer, LR schedule, gradient scaler, ...) and the RNG states, named
  ``<part>.<key>...`` (``optimizer.state.3.exp_avg``);
* JSON: where the loop stands (``Progress``), the options, model config and data the run was
  started with, and for each part a skeleton of its state dict whose tensors point at the
  tensors above. Nothing is pickled.

With ``--seed`` on the CPU a resumed run gives bit-identical weights to an uninterrupted one:
the data order depends only on (seed, epoch) and the position in the epoch, and the RNGs are
restored. Under torchrun rank 0 writes the file and every rank reads it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqgen import __version__
from vqgen import distributed as dist
from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.errors import VQGenError
from vqgen.logs import say
from vqgen.train.signals import StopSignal, TrainingStopped

# options that may change when resuming: they change speed or the schedule's length, not what is trained
CHANGEABLE_OPTIONS = ("epochs", "lr", "save_every", "device", "amp", "compile", "num_workers")
TENSOR, ITEMS, TUPLE = "$tensor", "$items", "$tuple"  # markers in the JSON skeletons


def resume_path(out: str | Path) -> Path:
    """checkpoints/vqvae.safetensors -> checkpoints/vqvae.resume.safetensors"""
    out = Path(out)
    return out.with_name(f"{out.stem}.resume.safetensors")


@dataclass
class Progress:
    """Where the training loop stands (saved as JSON)."""

    epoch: int = 0  # completed epochs (trained, validated, logged)
    batch: int = 0  # batches done of epoch ``epoch + 1``
    step: int = 0  # optimizer steps in all
    best: float | None = None  # best validation value so far (lower is better)
    sums: dict[str, float] = field(default_factory=dict)  # running sums over the batches of the unfinished epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per completed epoch
    elapsed_s: float = 0.0  # training time spent so far (by earlier processes too)

    def means(self) -> dict[str, float]:
        return {key: value / max(1, self.batch) for key, value in self.sums.items()}

    def finish_epoch(self, epoch: int) -> None:
        self.epoch, self.batch, self.sums = epoch, 0, {}


class TrainingState:
    """Saves and restores the resumable state of one training run.

    ``parts`` maps names to objects with ``state_dict``/``load_state_dict`` (model, optimizer,
    scheduler, scaler, ...); the RNG states are added. ``run`` (config, data, options) must match
    when resuming, except for the options in CHANGEABLE_OPTIONS.
    """

    def __init__(self, stage: str, out: Path, parts: dict[str, Any], run: dict[str, Any], save_every: int = 1):
        self.stage, self.out, self.path = stage, Path(out), resume_path(out)
        self.parts = {**parts, "rng": RngState()}
        self.run = run
        self.save_every = save_every
        self.saved: Progress | None = None  # what the file on disk holds
        self.started = time.time()

    # ------------------------------------------------------------------------- restoring

    def find(self, resume: str | Path | None) -> Path | None:
        """``--resume``: None (start fresh), ``auto`` (this run's resume file, if there is one) or a path."""
        if resume is None:
            return None
        if str(resume) == "auto":
            if self.path.is_file():
                return self.path
            say(f"--resume auto: no {self.path} yet; starting from scratch")
            return None
        path = Path(resume)
        if not path.is_file():
            raise VQGenError(f"--resume {path}: no such file")
        return path

    def restore(self, resume: str | Path | None) -> Progress:
        """Load the state named by ``--resume`` into the parts and return the loop position.

        Call it last before the loop, after everything that draws random numbers at start-up:
        it sets the RNGs to where the saved run was.
        """
        path = self.find(resume)
        if path is None:
            return Progress()
        tensors, meta = load_vqgen_file(path, "resume")
        if meta.get("stage") != self.stage:
            raise VQGenError(f"{path}: the training state of a {meta.get('stage')} run, not of a {self.stage} run")
        self._check_same_run(path, meta["run"])
        for name, part in self.parts.items():
            if name not in meta["state"]:
                raise VQGenError(f"{path}: holds no state for '{name}' (saved by another kind of run)")
            self._load_part(path, name, part, join_state(meta["state"][name], tensors))
        self._follow_changed_options(meta["run"]["options"])
        progress = Progress(**meta["progress"])
        self.saved = progress
        self.started = time.time() - progress.elapsed_s
        where = f"epoch {progress.epoch + 1}, batch {progress.batch}" if progress.batch else f"epoch {progress.epoch}"
        say(f"resuming from {path}: {where} done, step {progress.step}")
        epochs = self.run["options"]["epochs"]
        if progress.epoch >= epochs:
            say(f"note: the saved run has done {progress.epoch} epochs (--epochs {epochs}); nothing to train, "
                "pass a larger --epochs to go on")
        return progress

    def _check_same_run(self, path: Path, saved: dict[str, Any]) -> None:
        changed = [
            f"{key} (saved {a!r}, now {b!r})"
            for key, a, b in _differences(saved, self.run)
            if key.removeprefix("options.") not in CHANGEABLE_OPTIONS and not _same_path(key, a, b)
        ]
        if changed:
            shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
            allowed = ", ".join(f"--{o.replace('_', '-')}" for o in CHANGEABLE_OPTIONS if o != "num_workers")
            raise VQGenError(
                f"{path}: cannot resume, this run differs from the saved one in {shown}; "
                f"use the original options (only {allowed} and --workers may change)"
            )

    def _load_part(self, path: Path, name: str, part: Any, state: Any) -> None:
        if isinstance(part, torch.amp.GradScaler) and (not state or not part.is_enabled()):
            return  # fp16 loss scaling switched on or off: start the scaler afresh
        try:
            part.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VQGenError(f"{path}: the saved {name} does not fit this run ({first})") from e

    def _follow_changed_options(self, saved: dict[str, Any]) -> None:
        """A new --lr scales every schedule; a new --epochs stretches it (the schedules are rebuilt from the options)."""
        scale = self.run["options"]["lr"] / saved["lr"]
        if scale == 1 and self.run["options"]["epochs"] == saved["epochs"]:
            return
        say(f"note: resuming with --epochs {self.run['options']['epochs']} --lr {self.run['options']['lr']:g} "
            f"(saved run: --epochs {saved['epochs']} --lr {saved['lr']:g}); the LR schedule follows the new values")
        for part in self.parts.values():
            if isinstance(part, torch.optim.lr_scheduler.LambdaLR):
                state = part.state_dict()  # the scheduler's public state: base and last LRs included
                bases = [base * scale for base in state["base_lrs"]]
                lrs = [base * f(part.last_epoch) for base, f in zip(bases, part.lr_lambdas)]
                part.load_state_dict({**state, "base_lrs": bases, "_last_lr": lrs})
                for group, base, lr in zip(part.optimizer.param_groups, bases, lrs):
                    group["lr"], group["initial_lr"] = lr, base

    # ------------------------------------------------------------------------- saving

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Save every ``save_every`` epochs and after the last one (so a finished run can be extended)."""
        return epoch % self.save_every == 0 or epoch == last_epoch

    def elapsed(self) -> float:
        return round(time.time() - self.started, 1)

    def save(self, progress: Progress) -> None:
        """Write the resume file (rank 0; the others only note what was saved)."""
        progress.elapsed_s = self.elapsed()
        if dist.is_main():
            tensors: dict[str, torch.Tensor] = {}
            skeletons = {name: split_state(part.state_dict(), name, tensors) for name, part in self.parts.items()}
            meta = {
                "kind": "resume",
                "stage": self.stage,
                "vqgen_version": __version__,
                "out": str(self.out),
                "progress": asdict(progress),
                "run": self.run,
                "state": skeletons,
            }
            save_vqgen_file(self.path, tensors, meta)
        self.saved = Progress(**{**asdict(progress), "history": []})

    def kept(self) -> str:
        """What a failed run leaves to go on from (for error messages)."""
        if self.saved is None:
            return "no training state was saved yet; try a lower --lr"
        return (
            f"the last good state, after epoch {self.saved.epoch} (step {self.saved.step}), is kept in {self.path}; "
            "continue from it with --resume auto and a lower --lr"
        )

    def stop(self, progress: Progress, stop: StopSignal, total_batches: int) -> TrainingStopped:
        """Save now (a stop signal came) and return the exception that ends the run."""
        self.save(progress)
        dist.barrier()  # no rank may exit (and make torchrun kill the others) before rank 0 has saved
        where = (
            f"epoch {progress.epoch + 1}, batch {progress.batch}/{total_batches}"
            if progress.batch
            else f"the end of epoch {progress.epoch}"
        )
        name = stop.signal.name if stop.signal else "a stop signal on another process"
        return TrainingStopped(
            f"stopped by {name} at step {progress.step} ({where}); the training state is saved in {self.path}; "
            "to continue, run the same command with --resume auto",
            stop.exit_code,
        )


# ----------------------------------------------------------------------------- RNG states


class RngState:
    """The generators a run draws from: torch's (CPU, and this process's GPU), Python's and NumPy's."""

    def state_dict(self) -> dict[str, Any]:
        version, mt, gauss = random.getstate()
        kind, key, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss},
            "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
        npy = state["numpy"]
        key = npy["key"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))


# ----------------------------------------------------------------------------- nested state <-> tensors + JSON


def split_state(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able skeleton of a nested state dict; its tensors go to ``tensors`` (CPU copies) under dotted names."""
    if isinstance(obj, torch.Tensor):
        key = name if name not in tensors else f"{name}#{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True)
        return {TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_state(v, f"{name}.{k}", tensors) for k, v in obj.items()}
        return {ITEMS: [[k, split_state(v, f"{name}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {TUPLE: [split_state(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_state(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} (at {name}) in a resume file")


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``split_state``."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {TENSOR}:
            return tensors[skeleton[TENSOR]]
        if set(skeleton) == {ITEMS}:
            return {k: join_state(v, tensors) for k, v in skeleton[ITEMS]}
        if set(skeleton) == {TUPLE}:
            return tuple(join_state(v, tensors) for v in skeleton[TUPLE])
        return {k: join_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_state(v, tensors) for v in skeleton]
    return skeleton


def _differences(a: Any, b: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) wherever the JSON-like ``b`` differs from the saved ``a``."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for k in a:  # a key only in ``b`` is recorded by a newer version: an older file cannot disagree with it
            found += _differences(a[k], b.get(k), f"{key}.{k}" if key else str(k))
        return found
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b):
        return []
    if isinstance(a, float) and isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b))):
        return []
    return [] if a == b else [(key, a, b)]


def _same_path(key: str, a: Any, b: Any) -> bool:
    """A data folder given once as a relative and once as an absolute path is the same data."""
    if not key.endswith(".data") or not isinstance(a, str) or not isinstance(b, str):
        return False
    return Path(a).exists() and Path(a).resolve() == Path(b).resolve()
