"""Drawing codes from logits, for any autoregressive prior over raster-ordered codes.

* Gumbel-max draws (``gumbel_noise``, ``pick_codes``, ``draw_codes``) with temperature and top-k, and the
  temperature of each raster position (``raster_temperatures``: residual VQ's finer codes have their own);
* classifier-free guidance (``Guidance``): each conditional row runs beside an unconditional twin
  in one batch, and the logits are combined as uncond + S * (cond - uncond);
* near-tie handling (``is_decisive``, ``correct_near_ties``): a fast sampler whose logits differ
  from the reference's by float rounding flags the draws that rounding could change and checks
  them against one exact pass, so it still draws exactly the reference's codes;
* ``exact_float32``: no TF32 while sampling, so those rounding differences stay small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from vqgen.config import GUIDED_SCALE, GUIDED_TEMPERATURE, RESIDUAL_TEMPERATURE
from vqgen.errors import VQGenError

# Bound on |fast - reference| logits, relative to 1 + max |logit| of the row (measured: < 1.5e-6).
TIE_TOLERANCE = 3e-5


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Run float32 convolutions and matmuls in full float32 (no TF32), then restore the flags.

    cuDNN's TF32 convolutions (PyTorch's default on Ampere and later) are off by ~1e-3 relative,
    far above TIE_TOLERANCE, and only one of two samplers may run convolutions at all.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise; the uniforms come from ``generator`` on the CPU whatever the device,
    so the same seed gives the same codes on CPU and GPU up to logit rounding."""
    uniform = torch.rand(shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7).to(device)
    return -torch.log(-torch.log(uniform))


def top_k_scaled(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """The logits a code is drawn from: divided by the temperature, all but the top k at -inf."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def pick_codes(logits: torch.Tensor, noise: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Gumbel-max: argmax of the (top-k masked) ``logits / temperature`` plus ``noise``."""
    return (top_k_scaled(logits, temperature, top_k) + noise).argmax(dim=1)


def draw_codes(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw one code per row of ``logits`` (B, K) with the Gumbel-max trick."""
    return pick_codes(logits, gumbel_noise(logits.shape, generator, logits.device), temperature, top_k)


def choose_guidance(model, scale: float | None, option: str = "guidance") -> float:
    """The guidance scale to sample ``model`` with: ``scale``, checked; None: the scale its config records
    (``--sample-guidance``; files from before it was recorded: GUIDED_SCALE), 1 (no guidance) for a prior
    trained without label dropout."""
    if scale is None:
        guided = model.conditional and model.null_label is not None
        scale = (getattr(model.cfg, "guidance", None) or GUIDED_SCALE) if guided else 1.0
    check_guidance(model, scale, option)
    return scale


def choose_temperature(model, temperature: float | None, guidance: float) -> float:
    """The temperature to sample ``model`` with: ``temperature``; None: with guidance (S != 1) the one its config
    records (``--sample-temperature``; files from before it was recorded: GUIDED_TEMPERATURE), else 1."""
    if temperature is None:
        recorded = getattr(model.cfg, "guided_temperature", None)
        return (recorded or GUIDED_TEMPERATURE) if guidance != 1 else 1.0
    return temperature


def choose_residual_temperature(model, temperature: float | None) -> float | None:
    """The temperature of the finer codes of a prior over residual VQ stacks: ``temperature``, checked; None: the
    one its config records (files from before it was recorded: RESIDUAL_TEMPERATURE). None for a prior over one
    code per position, which refuses a given one."""
    if getattr(model.cfg, "code_depth", 1) == 1:
        if temperature is not None:
            raise VQGenError("--residual-temperature is for priors over the codes of a residual VQ-VAE "
                             "(--quantizer rvq); this one models one code per position")
        return None
    if temperature is None:
        return getattr(model.cfg, "residual_temperature", None) or RESIDUAL_TEMPERATURE
    if not temperature > 0:
        raise VQGenError(f"--residual-temperature must be positive, not {temperature}")
    return temperature


def raster_temperatures(cfg, temperature: float, residual_temperature: float | None) -> list[float]:
    """The temperature of each raster position of a prior's (h, w) maps: ``temperature``, except that over residual
    VQ stacks (``cfg.code_depth`` d > 1 codes of a position side by side along the row) the finer codes, depth 2
    on, take ``residual_temperature`` (None: the same)."""
    h, w = cfg.latent_shape
    depth = getattr(cfg, "code_depth", 1)
    finer = temperature if residual_temperature is None else residual_temperature
    return [temperature if column % depth == 0 else finer for _ in range(h) for column in range(w)]


def check_guidance(model, scale: float, option: str = "guidance") -> None:
    """Whether ``model`` (with ``conditional`` and ``null_label``) can be sampled with guidance ``scale``."""
    if not scale >= 0:
        raise VQGenError(f"{option} must be >= 0, not {scale}")
    if scale == 1:
        return
    if not model.conditional:
        raise VQGenError(f"{option} {scale} needs a class-conditional prior, but this one is unconditional")
    if model.null_label is None:
        raise VQGenError(
            f"{option} {scale} needs a prior trained with --label-dropout > 0; this one was trained without"
        )


class Guidance:
    """Classifier-free guidance with scale S for a batch of n labels.

    With S != 1 the model runs on 2n rows: the n conditional ones, then the same codes with the
    null label; ``combine`` turns their logits (2n, ...) into uncond + S * (cond - uncond) (n, ...).
    S == 1 is plain conditional sampling: the n rows alone, untouched. S == 0 is unconditional.
    """

    def __init__(self, scale: float, labels: torch.Tensor | None, null_labels: Callable[[], torch.Tensor] | None):
        self.scale = float(scale)
        self.active = self.scale != 1
        self.labels = torch.cat([labels, null_labels()]) if self.active else labels

    @classmethod
    def for_model(cls, model, labels: torch.Tensor | None, scale: float, device: torch.device | str) -> Guidance:
        """Check ``scale`` for ``model`` (a prior with ``conditional``, ``check_labels``, ``null_label``
        and ``null_labels``) and set up the rows of its batch, on ``device``."""
        check_guidance(model, scale)
        labels = model.check_labels(labels.to(device) if labels is not None else None)
        return cls(scale, labels, lambda: model.null_labels(len(labels), device))

    def batch_size(self, n: int) -> int:
        return 2 * n if self.active else n

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for the n maps ``x``: twice over when guiding."""
        return torch.cat([x, x]) if self.active else x

    def conditioning(self, cond: torch.Tensor | None, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The model's keyword arguments for a conditioning map ``cond`` (n, hc, wc) of each map: none without one."""
        return {} if cond is None else {"cond": self.rows(cond.to(device))}

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + self.scale * (cond - uncond)

    def tolerance(self, tolerance: float) -> float:
        """Relative error bound on combined logits, given ``tolerance`` on each half (relative to
        ``magnitude``): |1 - S| + S times it, plus the combination's own float32 rounding.
        0 stays 0 (trust every draw)."""
        if not self.active or tolerance == 0:
            return tolerance
        s = self.scale
        return tolerance * (abs(1 - s) + s) + 2.0**-22 * (1 + 3 * s)

    def magnitude(self, logits: torch.Tensor) -> torch.Tensor:
        """1 + max |logit| per row (n, 1), over both halves when guiding."""
        top = logits.float().abs().amax(1, keepdim=True)
        return 1 + (torch.maximum(*top.chunk(2)) if self.active else top)


def is_decisive(
    logits: torch.Tensor,
    noise: torch.Tensor,
    temperature: float,
    top_k: int | None,
    tolerance: float,
    magnitude: torch.Tensor | None = None,
) -> bool:
    """Whether ``pick_codes`` gives the same codes for every logits within ``tolerance`` of these.

    Each scaled logit may be off by eta = tolerance * magnitude / temperature (plus the rounding
    of adding the noise), magnitude being 1 + max |logit| of the row unless given. A row's code is
    certain when its winner (a) beats by more than 2 eta every code that could be inside the
    top-k, i.e. whose scaled logit is within 2 eta of the k-th largest or above, and (b) has fewer
    than k codes that could overtake it, so it stays inside the top-k.
    """
    if logits.shape[1] < 2:
        return True
    scaled = logits.float() / temperature
    scores = scaled + noise
    if magnitude is None:
        magnitude = 1 + logits.float().abs().amax(1, keepdim=True)
    eta = tolerance * magnitude / temperature
    # one float32 rounding each for the division and for adding the noise
    eta = eta + 2.0**-23 * (scaled.abs().amax(1, keepdim=True) + scores.abs().amax(1, keepdim=True))
    masked = top_k is not None and top_k < logits.shape[1]
    if masked:
        kth = scaled.topk(top_k, dim=1).values[:, -1:]
        scores = scores.masked_fill(scaled < kth - 2 * eta, float("-inf"))
    best, index = scores.topk(2, dim=1)
    certain = best[:, :1] - best[:, 1:] > 2 * eta
    if masked:
        winner = scaled.gather(1, index[:, :1])
        certain &= (scaled > winner - 2 * eta).sum(1, keepdim=True) <= top_k
    return bool(certain.all())


NearTies = list[tuple[int, torch.Tensor]]  # (raster position, the Gumbel noise drawn there)
FastPass = Callable[[int], tuple[dict[int, torch.Tensor], NearTies]]


def correct_near_ties(
    codes: torch.Tensor,
    fast_pass: FastPass,
    exact_logits: Callable[[], torch.Tensor],
    temperatures: Sequence[float],
    top_k: int | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw ``codes`` (n, T), raster order, exactly as the reference sampler would, with a fast one.

    ``fast_pass(start)`` draws codes[:, start:] in place (the earlier ones given) and returns the
    generator state before each draw and its near-ties. ``exact_logits()`` is the reference's
    logits (n, K, T) over the finished codes, in one pass; causal in floating point too, so at
    each position they are bit for bit those the reference computed. Where a near-tied code
    differs, it is corrected and the rest is drawn again from the same random numbers. ``temperatures``: that of
    each position.
    """
    total = codes.shape[1]
    start = 0
    while start < total:
        states, near_ties = fast_pass(start)
        start = total
        if near_ties:
            exact = exact_logits()
            for t, noise in near_ties:
                code = pick_codes(exact[:, :, t], noise, temperatures[t], top_k)
                if not torch.equal(code, codes[:, t]):
                    codes[:, t] = code
                    start = t + 1
                    if start < total:
                        generator.set_state(states[start])
                    break
    return codes
