"""Sampling code maps from a prior: the shared drawing rules, the reference sampler and the cached one.

* ``draw``: Gumbel-max draws, temperature, top-k, classifier-free guidance, near-tie handling;
* ``full``: the reference sampler (one whole forward pass per position), for any causal prior;
* ``cached``: the cached sampler (identical codes, much faster), driving the prior's own incremental step
  (``model.cache(n, labels)``: the PixelCNN's row caches, the transformer's key/value cache, in ``vqgen.models``);
* ``masked``: parallel decoding of a masked prior in a few steps (MaskGIT), also of the hidden part of a map;
* ``levels``: ``sample_maps``, one map from a one-level prior, top then bottom from a two-level one;
  ``sampler_for``, the sampler of a prior.
"""

from vqgen.sampling.cached import cached_logits, sample_cached
from vqgen.sampling.draw import (
    TIE_TOLERANCE, Guidance, check_guidance, choose_guidance, choose_residual_temperature, choose_temperature,
    draw_codes, exact_float32, is_decisive, raster_temperatures,
)
from vqgen.sampling.full import sample_full
from vqgen.sampling.levels import SAMPLERS, is_masked, sample_maps, sampler_for
from vqgen.sampling.masked import sample_masked

__all__ = [
    "SAMPLERS", "TIE_TOLERANCE", "Guidance", "cached_logits",
    "check_guidance", "choose_guidance", "choose_residual_temperature", "choose_temperature", "draw_codes",
    "exact_float32", "is_decisive", "is_masked", "raster_temperatures", "sample_cached", "sample_full", "sample_maps",
    "sample_masked", "sampler_for",
]
