"""Drawing from the prior of either kind of VQ-VAE: one code map, or VQ-VAE-2's top map, then its bottom map; and
which sampler draws from a prior."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from vqgen.errors import VQGenError
from vqgen.sampling.cached import sample_cached
from vqgen.sampling.full import sample_full
from vqgen.sampling.masked import DEFAULT_CHOICE_TEMPERATURE, DEFAULT_STEPS, check_steps, sample_masked

SAMPLERS = {"cached": sample_cached, "full": sample_full}  # of the raster-order priors


def is_masked(prior: torch.nn.Module) -> bool:
    return getattr(prior.cfg, "arch", "") == "masked"


def sampler_for(prior: torch.nn.Module, name: str = "cached", steps: int | None = None,
                choice_temperature: float | None = None) -> Callable[..., torch.Tensor]:
    """The sampler of ``prior``: ``SAMPLERS[name]`` for a raster-order prior; parallel decoding in ``steps`` steps
    (default ``DEFAULT_STEPS``) with ``choice_temperature`` for a masked one."""
    if not is_masked(prior):
        for option, value in (("--steps", steps), ("--choice-temperature", choice_temperature)):
            if value is not None:
                raise VQGenError(f"{option} is an option of masked priors (--arch masked); this prior draws one code "
                                 "per step in raster order")
        if name not in SAMPLERS:
            raise VQGenError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {name!r}")
        return SAMPLERS[name]
    if name != "cached":
        raise VQGenError(f"--sampler {name} is for raster-order priors; a masked prior draws in --steps parallel steps")
    steps = DEFAULT_STEPS if steps is None else steps
    choice_temperature = DEFAULT_CHOICE_TEMPERATURE if choice_temperature is None else choice_temperature
    check_steps(steps, choice_temperature)
    return functools.partial(sample_masked, steps=steps, choice_temperature=choice_temperature)


def sample_maps(draw: Callable[..., torch.Tensor], prior: torch.nn.Module, n: int,
                **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``n`` code maps drawn with ``draw`` (a sampler of ``SAMPLERS``) and its ``options``; from a two-level
    prior (top, bottom): the top maps first, then the bottom maps given them, from the same generator."""
    if getattr(prior, "levels", 1) == 2:
        top = draw(prior.top, n, **options)
        return top, draw(prior.bottom, n, cond=top, **options)
    return draw(prior, n, **options)
