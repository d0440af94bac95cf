"""An exponential moving average of a model's weights (Polyak averaging), kept beside the training.

``WeightEMA`` is a hook of ``vqgen.train.loop.fit``: after every optimizer step it moves a running
sum a step of ``1 - decay`` towards the trained weights and sets its copy of the model to that sum
divided by ``1 - decay ** updates`` (the bias correction of Adam's moments): from the first step
on the copy is the average of the weights so far, weighted by ``decay ** age``, with no pull
towards the initial weights however short the run. Buffers are copied as they are. The trainer
validates and saves the average instead of the raw weights; both go into the resume file.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.average = copy.deepcopy(model).requires_grad_(False).eval()
        self.running = [torch.zeros_like(p, dtype=torch.float32) for p in model.parameters()]
        self.updates = 0

    @torch.no_grad()
    def after_step(self, result: Any, step: int, device: torch.device) -> None:
        self.updates += 1
        correction = 1 - self.decay**self.updates
        for running, averaged, trained in zip(self.running, self.average.parameters(), self.model.parameters()):
            running.lerp_(trained.detach().float(), 1 - self.decay)
            averaged.copy_(running / correction)
        for averaged, trained in zip(self.average.buffers(), self.model.buffers()):
            averaged.copy_(trained)

    def epoch_summary(self) -> dict[str, float]:
        return {}

    def postfix(self) -> dict[str, str]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average.state_dict(), "running": list(self.running),
                "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state["average"])
        for running, saved in zip(self.running, state["running"]):
            running.copy_(saved)
        self.updates = int(state["updates"])
