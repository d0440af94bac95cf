"""Sampling code maps from a prior: the shared drawing rules and one sampler per architecture.

* ``draw``: Gumbel-max draws, temperature, top-k, classifier-free guidance, near-tie handling;
* ``full``: the reference sampler (one whole forward pass per position), for any causal prior;
* ``pixelcnn``: the cached sampler of the gated PixelCNN (identical codes, much faster);
* ``levels``: ``sample_maps``, one map from a one-level prior, top then bottom from a two-level one.
"""

from vqgen.sampling.draw import TIE_TOLERANCE, Guidance, check_guidance, draw_codes, exact_float32, is_decisive
from vqgen.sampling.full import sample_full
from vqgen.sampling.levels import sample_maps
from vqgen.sampling.pixelcnn import CachedPixelCNN, cached_logits, sample_cached

SAMPLERS = {"cached": sample_cached, "full": sample_full}

__all__ = [
    "SAMPLERS", "TIE_TOLERANCE", "CachedPixelCNN", "Guidance", "cached_logits", "check_guidance", "draw_codes",
    "exact_float32", "is_decisive", "sample_cached", "sample_full", "sample_maps",
]
