"""Independent random streams derived from (seed, stream, epoch), one helper for every seeded draw.

``seed + epoch`` would make seed s at epoch e + 1 replay seed s + 1 at epoch e, so the runs of a seed
sweep would share their data orders and shifts. ``numpy.random.SeedSequence`` hashes the whole key
instead: distinct keys give unrelated streams, and the same key always gives the same one (resume
stays exact).
"""

from __future__ import annotations

import numpy as np
import torch

# one name per kind of draw, so that two kinds never share a stream for the same (seed, epoch)
SHUFFLE, VARIANT, SHIFT, COPY_SHIFT, FLIP = 0, 1, 2, 3, 4


def stream_seed(seed: int, stream: int, epoch: int) -> int:
    """A 63-bit seed for the draws of kind ``stream`` at ``epoch`` of a run seeded ``seed``."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, stream, epoch]).generate_state(2)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & (2**63 - 1)


def stream_generator(seed: int, stream: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded for the draws of kind ``stream`` at ``epoch``."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, epoch))
