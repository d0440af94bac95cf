"""The cached sampler: the prior's own incremental step (``model.cache(n, labels)``), driven one raster
position at a time.

A cache (``CachedPixelCNN``, ``CachedTransformer``, beside their models) evaluates its prior incrementally: per step only
the activations the new position changes. It offers, for n maps of raster positions 0 .. T-1:
``prefill(codes (n, t))`` takes the first t codes as given, ``step_logits()`` gives the logits (n, K)
of the next position, ``append(codes (n,))`` stores the codes chosen there and moves on.

Both samplers draw through ``pick_codes`` with the same Gumbel noise in the same order, so given
the same seed they produce identical codes. The cached logits equal the full ones only up to
float rounding, which could flip a near-tied draw; so the cached sampler flags every draw that
rounding of that size could change (a few in 10^5) and checks those against one full pass over
the finished map, redrawing from the first wrong one (``vqgen.sampling.draw.correct_near_ties``).

A prior with a conditioning map (the bottom PixelCNN of two levels) takes it as ``cond``: the
samplers hand it to the cache (and to the full passes) beside the labels.
"""

from __future__ import annotations

import torch

from vqgen.sampling.draw import (
    TIE_TOLERANCE,
    Guidance,
    NearTies,
    correct_near_ties,
    exact_float32,
    gumbel_noise,
    is_decisive,
    pick_codes,
    raster_temperatures,
)


@exact_float32()
@torch.no_grad()
def sample_cached(
    model: torch.nn.Module,
    n: int,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    tolerance: float = TIE_TOLERANCE,
    guidance: float = 1.0,
    cond: torch.Tensor | None = None,
    residual_temperature: float | None = None,
) -> torch.Tensor:
    """Sample ``n`` code maps with the prior's cache: the same codes as ``sample_full``, much faster.

    Draws that float rounding of the cached logits could change (near-ties, see ``is_decisive``;
    ``tolerance`` 0 trusts every draw) are checked once the map is done, against one full pass
    over it (see ``correct_near_ties``). ``guidance`` S != 1: classifier-free guidance, the
    conditional and unconditional rows side by side in the cache. ``cond``: the conditioning
    map of each sample (the top codes, for the bottom prior of two levels). ``residual_temperature``: that of
    the finer codes of residual VQ stacks (``raster_temperatures``).
    """
    h, w = model.cfg.latent_shape
    temperatures = raster_temperatures(model.cfg, temperature, residual_temperature)
    codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
    guide = Guidance.for_model(model, labels, guidance, device)
    given = guide.conditioning(cond, device)
    generator = generator if generator is not None else torch.default_generator

    def fast_pass(start: int) -> tuple[dict[int, torch.Tensor], NearTies]:
        return _cached_pass(model, codes.view(n, h * w), guide, given, start, temperatures, top_k, generator,
                            tolerance)

    def exact_logits() -> torch.Tensor:
        return guide.combine(model(guide.rows(codes), guide.labels, **given)).flatten(2)

    correct_near_ties(codes.view(n, h * w), fast_pass, exact_logits, temperatures, top_k, generator)
    return codes


def _cached_pass(
    model: torch.nn.Module,
    codes: torch.Tensor,
    guide: Guidance,
    given: dict[str, torch.Tensor],
    start: int,
    temperatures: list[float],
    top_k: int | None,
    generator: torch.Generator,
    tolerance: float,
) -> tuple[dict[int, torch.Tensor], NearTies]:
    """Draw ``codes`` (n, T) from raster position ``start`` on (the earlier codes are given) with the
    cache. Returns the generator state before each draw and the near-ties as (position, noise)."""
    n, total = codes.shape
    cache = model.cache(guide.batch_size(n), guide.labels, **given)
    cache.prefill(guide.rows(codes[:, :start]))
    tolerance = guide.tolerance(tolerance)
    states, near_ties = {}, []
    for t in range(start, total):
        raw = cache.step_logits()
        logits = guide.combine(raw)
        states[t] = generator.get_state()
        noise = gumbel_noise(logits.shape, generator, logits.device)
        codes[:, t] = pick_codes(logits, noise, temperatures[t], top_k)
        magnitude = guide.magnitude(raw)
        if tolerance > 0 and not is_decisive(logits, noise, temperatures[t], top_k, tolerance, magnitude):
            near_ties.append((t, noise))
        cache.append(guide.rows(codes[:, t]))
    return states, near_ties


@exact_float32()
@torch.no_grad()
def cached_logits(model: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor | None = None,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, K, H, W) of given code maps, computed position by position by the cache.

    Equals ``model(codes, labels, cond)`` up to float rounding; used to check the cached sampler.
    """
    n, h, w = codes.shape
    cache = model.cache(n, labels, **({} if cond is None else {"cond": cond}))
    steps = []
    for code in codes.reshape(n, h * w).unbind(1):
        steps.append(cache.step_logits())
        cache.append(code)
    return torch.stack(steps, dim=2).view(n, -1, h, w)
