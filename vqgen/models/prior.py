"""What every prior over code maps shares, whatever its architecture: labels and the NLL.

A prior maps code maps (B, H, W) and, when class-conditional, labels (B,) to logits (B, K, H, W),
the logits at (i, j) seeing only the codes before (i, j) in raster order. With label dropout
(classifier-free guidance, Ho & Salimans 2022) it also learns a "no class" label, index
``num_classes``, put in place of a random share of the labels in training.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen.config import PriorConfig
from vqgen.errors import VQGenError


def code_nll(logits: torch.Tensor, codes: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in float32 of logits (B, K, ...) against codes (B, ...), each position's K logits read as one
    row: the logits of a channels-last model are such rows already, so nothing is copied to reorder them."""
    rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    return F.cross_entropy(rows.float(), codes.reshape(-1), reduction=reduction)


class CodePrior(nn.Module):
    cfg: PriorConfig

    @property
    def conditional(self) -> bool:
        return self.cfg.num_classes > 0

    @property
    def null_label(self) -> int | None:
        """The "no class" label (index num_classes) of a prior trained with label dropout, else None."""
        return self.cfg.num_classes if self.cfg.label_dropout else None

    @property
    def class_rows(self) -> int:
        """Rows of a class embedding: one per class, and the "no class" row with label dropout."""
        return self.cfg.num_classes + (1 if self.null_label is not None else 0)

    def null_labels(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` "no class" labels: with them the prior models the codes of all classes together."""
        if self.null_label is None:
            raise VQGenError("this prior was trained without --label-dropout: it has no unconditional mode")
        return torch.full((n,), self.null_label, dtype=torch.long, device=device)

    def drop_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """In training mode, each label replaced by the null label with probability label_dropout.

        Draws from torch's global RNG, and nothing at all when label_dropout is 0.
        """
        p = self.cfg.label_dropout or 0.0
        if not self.training or p == 0:
            return labels
        dropped = torch.rand(labels.shape, device=labels.device) < p
        return labels.masked_fill(dropped, self.cfg.num_classes)

    def check_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise VQGenError("this prior is class-conditional: labels are required")
        return labels

    def forward_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels a forward pass uses: checked, and label-dropped in training."""
        labels = self.check_labels(labels)
        return self.drop_labels(labels) if labels is not None else None

    def cache(self, n: int, labels: torch.Tensor | None = None, **given: torch.Tensor):
        """An empty incremental evaluation of ``n`` maps (``prefill``, ``step_logits``, ``append``): each
        architecture's own, beside its layers; the cached sampler drives it."""
        raise NotImplementedError

    def nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per code."""
        return code_nll(self(codes, labels), codes)
