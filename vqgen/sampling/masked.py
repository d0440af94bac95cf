"""Parallel decoding of a masked prior (MaskGIT, Chang et al. 2022): a whole map in a few steps.

Every code to draw starts hidden ([MASK]). Each of ``steps`` steps runs the prior once over the maps,
draws a code at every hidden position (Gumbel-max with the same temperature, top-k and classifier-free
guidance as the raster samplers, ``vqgen.sampling.draw``), and keeps the most confident of them: after
step s (0-based) of S, ``floor(u * cos(pi/2 * (s + 1) / S))`` of a map's u hidden codes stay hidden
(at least one fewer each step while any are left; none after the last), the ones whose drawn code
had the lowest log-probability plus Gumbel noise scaled by the choice temperature. As in the paper
that temperature is annealed, ``choice_temperature * (1 - (s + 1) / S)``: early steps, whose choices
shape the whole map, pick among confident codes with some randomness; the last ones by confidence alone.
Codes not hidden are never changed, which is what `vqgen edit` relies on: it hides only the codes under
a box.
"""

from __future__ import annotations

import math

import torch

from vqgen.config import CHOICE_TEMPERATURE, MASKED_STEPS
from vqgen.errors import VQGenError
from vqgen.models.masked import lowest_scores_mask
from vqgen.sampling.draw import Guidance, top_k_scaled, exact_float32, gumbel_noise, pick_codes

DEFAULT_STEPS, DEFAULT_CHOICE_TEMPERATURE = MASKED_STEPS, CHOICE_TEMPERATURE  # `vqgen sample`'s defaults


def hidden_counts(unknown: int, steps: int) -> list[int]:
    """How many of ``unknown`` hidden codes are still hidden after each of ``steps`` decoding steps."""
    counts, left = [], unknown
    for step in range(steps):
        target = 0 if step == steps - 1 else math.floor(unknown * math.cos(math.pi / 2 * (step + 1) / steps))
        left = max(0, min(left - 1, target))
        counts.append(left)
    return counts


def check_steps(steps: int, choice_temperature: float) -> None:
    if steps < 1:
        raise VQGenError(f"--steps must be at least 1, not {steps}")
    if not choice_temperature >= 0:
        raise VQGenError(f"--choice-temperature must be 0 or more, not {choice_temperature}")


def decode_step(model: torch.nn.Module, codes: torch.Tensor, guide: Guidance, still_hidden: torch.Tensor,
                temperature: float, top_k: int | None, choice_temperature: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One step: maps ``codes`` (n, H, W), [MASK] where hidden -> the maps with all but ``still_hidden`` (n,)
    of their hidden codes drawn, the most confident ones; the codes already there are kept as they are."""
    n, h, w = codes.shape
    flat = codes.reshape(n, h * w)
    hidden = flat == model.mask_code
    logits = guide.combine(model(guide.rows(codes), guide.labels)).flatten(2).transpose(1, 2)[hidden]  # (M, K)
    drawn = pick_codes(logits, gumbel_noise(logits.shape, generator, logits.device), temperature, top_k)
    log_probs = top_k_scaled(logits, temperature, top_k).log_softmax(dim=1)
    confidence = log_probs.gather(1, drawn[:, None])[:, 0].double()
    confidence += choice_temperature * gumbel_noise(confidence.shape, generator, confidence.device).double()
    scores = torch.full(flat.shape, math.inf, dtype=torch.float64, device=flat.device)
    scores[hidden] = confidence
    proposal = flat.clone()
    proposal[hidden] = drawn
    keep_hidden = lowest_scores_mask(scores, still_hidden.to(flat.device))
    return proposal.masked_fill(keep_hidden, model.mask_code).view(n, h, w)


@exact_float32()
@torch.no_grad()
def sample_masked(
    model: torch.nn.Module,
    n: int,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    guidance: float = 1.0,
    cond: torch.Tensor | None = None,
    steps: int = DEFAULT_STEPS,
    choice_temperature: float = DEFAULT_CHOICE_TEMPERATURE,
    codes: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
    residual_temperature: float | None = None,
) -> torch.Tensor:
    """Draw ``n`` code maps (n, H, W) from a masked prior in ``steps`` parallel steps.

    ``codes`` (n, H, W) and ``hidden`` (bool, n, H, W): redraw only the hidden codes of given maps, the
    others kept bit for bit (default: every code hidden). ``guidance`` S != 1: classifier-free guidance.
    """
    if cond is not None:
        raise VQGenError("a masked prior models one code map; two-level VQ-VAEs take --arch pixelcnn priors")
    if residual_temperature is not None:
        raise VQGenError("a masked prior models one code per position; residual VQ codes take --arch pixelcnn priors")
    check_steps(steps, choice_temperature)
    h, w = model.cfg.latent_shape
    if codes is None:
        codes = torch.zeros(n, h, w, dtype=torch.long)
    if hidden is None:
        hidden = torch.ones(n, h, w, dtype=torch.bool)
    guide = Guidance.for_model(model, labels, guidance, device)
    x = codes.to(device).long().masked_fill(hidden.to(device), model.mask_code)
    schedule = torch.tensor([hidden_counts(int(u), steps) for u in hidden.reshape(n, -1).sum(1)], dtype=torch.long)
    for step in range(steps):
        if not (x == model.mask_code).any():
            break
        annealed = choice_temperature * (1 - (step + 1) / steps)
        x = decode_step(model, x, guide, schedule[:, step], temperature, top_k, annealed, generator)
    return x
