"""An exponential moving average of a model's weights (Polyak averaging), kept beside the training.

``WeightEMA`` is a hook of ``vqgen.train.loop.fit``: after every optimizer step it moves its copy
of the model a step of ``1 - decay`` towards the trained weights (buffers are copied as they are).
The trainer validates and saves the average instead of the raw weights; both go into the resume
file. Early in a run the decay is lowered to (1 + n) / (10 + n) after n updates, so that the
average is not dominated by the random initial weights of a short run.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


def warm_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th update (counted from 1): ``decay``, lowered while few updates are in."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.average = copy.deepcopy(model).requires_grad_(False).eval()
        self.updates = 0

    @torch.no_grad()
    def after_step(self, result: Any, step: int, device: torch.device) -> None:
        self.updates += 1
        weight = 1 - warm_decay(self.decay, self.updates)
        for averaged, trained in zip(self.average.parameters(), self.model.parameters()):
            averaged.lerp_(trained.detach(), weight)
        for averaged, trained in zip(self.average.buffers(), self.model.buffers()):
            averaged.copy_(trained)

    def epoch_summary(self) -> dict[str, float]:
        return {}

    def postfix(self) -> dict[str, str]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average.state_dict(), "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state["average"])
        self.updates = int(state["updates"])
