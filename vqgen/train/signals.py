"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM: finish the step, save, exit 130/143."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from vqgen import distributed as dist
from vqgen.errors import VQGenError
from vqgen.logs import say


class TrainingStopped(VQGenError):
    """The run stopped on SIGINT/SIGTERM after saving its state; the CLI exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the training loop to stop after the current step.

    The loop polls ``requested()`` after every step, saves its state and raises ``TrainingStopped``.
    In one process a second Ctrl-C quits at once (KeyboardInterrupt). Under torchrun repeated
    signals are ignored: the launcher forwards the terminal's Ctrl-C to workers that already got
    it, and kills them itself if they take too long. Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if self.signal is not None:
            if sig == signal.SIGINT and not dist.launched_by_torchrun():
                raise KeyboardInterrupt
            return
        self.signal = sig
        again = "" if dist.launched_by_torchrun() else " (Ctrl-C again quits at once, without saving)"
        say(f"{sig.name}: stopping after this step and saving the training state{again}", "yellow")

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether any process got a stop signal; under torchrun every rank gets the same answer (one all-reduce)."""
        wanted = self.signal is not None
        if dist.is_distributed():
            flag = torch.tensor(float(wanted), device=device)
            wanted = bool(dist.all_reduce_sum(flag).item() > 0)
        return wanted

    @property
    def exit_code(self) -> int:
        """The shell convention 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(self.signal or signal.SIGTERM)
