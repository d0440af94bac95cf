"""An exponential moving average of a model's weights (Polyak averaging), kept beside the training.

``WeightEMA`` is a hook of ``vqgen.train.loop.fit``: after every optimizer step it moves a running
sum a step of ``1 - decay`` towards the trained weights. ``averaged()`` returns a copy of the model
holding that sum divided by ``1 - decay ** updates`` (the bias correction of Adam's moments), with
the model's buffers: the average of the weights so far, weighted by ``decay ** age``, with no pull
towards the initial weights however short the run. The trainer validates and saves it instead of
the raw weights; the running sum and the update count go into the resume file.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.average = copy.deepcopy(model).requires_grad_(False).eval()  # filled by averaged()
        self.running = [torch.zeros_like(p, dtype=torch.float32) for p in model.parameters()]
        self.updates = 0

    @torch.no_grad()
    def after_step(self, result: Any, step: int, device: torch.device) -> None:
        self.updates += 1
        for running, trained in zip(self.running, self.model.parameters()):
            running.lerp_(trained.detach().float(), 1 - self.decay)

    @torch.no_grad()
    def averaged(self) -> nn.Module:
        """The model with the averaged weights (the trained ones before the first update) and its buffers."""
        correction = 1 - self.decay**self.updates
        for averaged, running, trained in zip(self.average.parameters(), self.running, self.model.parameters()):
            averaged.copy_(running / correction if self.updates else trained)
        for averaged, trained in zip(self.average.buffers(), self.model.buffers()):
            averaged.copy_(trained)
        return self.average

    def epoch_summary(self) -> dict[str, float]:
        return {}

    def postfix(self) -> dict[str, str]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"running": list(self.running), "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for running, saved in zip(self.running, state["running"]):
            running.copy_(saved)
        self.updates = int(state["updates"])
