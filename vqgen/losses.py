"""Autoencoder losses beyond plain MSE: L1/MSE reconstruction, hinge GAN losses, VQGAN's adaptive
weight, and an LPIPS-style perceptual distance on VGG16 features.

All image arguments are in model space [-1, 1].
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqgen import distributed as dist
from vqgen.config import RECON_LOSSES
from vqgen.errors import VQGenError



def settle_at_bounds(recon: torch.Tensor, target: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """``recon`` with overshoot past a bound of the pixel range removed where the target sits on it.

    Decoded images are clamped to the pixel range, so a pixel that should be black (or white)
    and comes out blacker (or whiter) is exact in the decoded image: the loss should not charge
    for it. On MNIST four pixels in five are exactly black.
    """
    recon = torch.where(target <= low, recon.clamp_min(low), recon)
    return torch.where(target >= high, recon.clamp_max(high), recon)


def log_mse_per_image(recon: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over images of ln(MSE of the image + eps) / 100: a lower value is a higher mean per-image PSNR.

    Unlike the MSE over the batch, every image counts by its relative error, so well-reconstructed
    images keep improving instead of vanishing from the gradient. ``eps`` (in [-1, 1] model space)
    caps the PSNR that still pays at about 56 dB; the 1/100 keeps the loss at the scale of the MSE
    next to the commitment term.
    """
    mse = (recon - target).pow(2).flatten(1).mean(1)
    return torch.log(mse + eps).mean() / 100


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pixel loss in model space [-1, 1]: ``mse``, ``l1``, ``l1+mse`` (their sum) or ``psnr`` (per-image log-MSE).

    Every kind first drops overshoot past the range where the target sits on a bound (``settle_at_bounds``).
    """
    if kind not in RECON_LOSSES:
        raise VQGenError(f"--recon-loss must be one of {', '.join(RECON_LOSSES)}, not {kind!r}")
    recon = settle_at_bounds(recon.float(), target)
    if kind == "psnr":
        return log_mse_per_image(recon, target)
    loss = recon.new_zeros(())
    if "l1" in kind:
        loss = loss + F.l1_loss(recon, target)
    if "mse" in kind:
        loss = loss + F.mse_loss(recon, target)
    return loss


class ReconstructionLoss:
    """The VQ-VAE's reconstruction loss, the one place it is computed: the pixel loss of ``--recon-loss``, plus
    ``--perceptual-weight`` times the perceptual distance with ``--perceptual-weights``.

    Called with (reconstruction, target) in model space [-1, 1]; returns the loss and its logs: ``mse`` (the
    pixel MSE of what decoding shows, overshoot at the range's bounds removed, comparable across loss choices),
    ``recon`` (the chosen pixel loss) and ``perceptual`` (when on), as detached scalars.
    """

    def __init__(self, kind: str = "psnr", perceptual_weights: str | Path | None = None,
                 perceptual_weight: float = 1.0, device: torch.device | str = "cpu"):
        self.kind, self.perceptual_weight = kind, perceptual_weight
        self.perceptual = PerceptualLoss.from_file(perceptual_weights).to(device) if perceptual_weights else None

    def __call__(self, recon: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon = recon.float()
        loss = reconstruction_loss(recon, target, self.kind)
        logs = {"mse": F.mse_loss(settle_at_bounds(recon.detach(), target), target), "recon": loss.detach()}
        if self.perceptual is not None:
            perceptual = self.perceptual(recon, target)
            loss = loss + self.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.detach()
        return loss, logs


# ----------------------------------------------------------------------------- adversarial


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real logits above +1 and fake ones below -1 (mean of both halves)."""
    return 0.5 * (F.relu(1 - logits_real.float()).mean() + F.relu(1 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: raise the discriminator's logits on reconstructions."""
    return -logits_fake.float().mean()


def adaptive_weight(
    recon_grad: torch.Tensor,
    gan_grad: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's balance: ||d recon / d w|| / (||d gan / d w|| + eps), from the two losses' gradients at the
    decoder's last layer w.

    Scaling the adversarial loss by this makes its gradient at the decoder output about as large as
    the reconstruction gradient, whatever the two losses' scales. The result is a detached scalar,
    clamped to [0, max_weight]; a non-finite ratio (e.g. fp16 overflow) counts as 0 for this step.
    Under torchrun both gradients are summed over the processes first, so every rank uses the
    weight one process would compute on the whole global batch.
    """
    recon_grad, gan_grad = dist.all_reduce_sum(torch.stack([recon_grad.detach().float(), gan_grad.detach().float()]))
    ratio = recon_grad.norm() / (gan_grad.norm() + eps * dist.world_size())
    ratio = torch.nan_to_num(ratio, nan=0.0, posinf=0.0, neginf=0.0)
    return ratio.clamp(0.0, max_weight).detach()


def with_gradient(output: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar equal to ``value`` whose backward sends exactly ``grad`` into ``output``'s graph: how a loss whose
    gradient at ``output`` was already computed joins the rest of the step's backward pass."""
    link = (output * grad.detach()).sum()
    return value.detach() + link - link.detach()


def discriminator_accuracy(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of patches judged correctly: real ones with logit > 0, fake ones with logit < 0 (scalar tensors)."""
    return (logits_real > 0).float().mean(), (logits_fake < 0).float().mean()


# ----------------------------------------------------------------------------- perceptual

VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS's layers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` up to relu5_3 (state-dict keys "0.weight", "2.weight", ...), with
    PyTorch's default initialisation of each conv. Built on the meta device first, so that the classifier's
    100M unused parameters are never allocated."""
    import torchvision

    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features[: VGG16_TAPS[-1] + 1]
    features = features.to_empty(device="cpu")
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            layer.reset_parameters()
    return features


def read_vgg16_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a VGG16 weights file: safetensors, or torchvision's official ``.pth``.

    A ``.pth`` file is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
    plain containers and refuses any other pickled object, so no code from the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise VQGenError(f"{path}: --perceptual-weights file not found (give torchvision's VGG16 weights file)")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head.startswith((b"\x80", b"PK\x03\x04")):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\.\s|\n|$)", str(e))
        detail = found.group(1) if found else "not plain tensors"
        raise VQGenError(
            f"{path}: cannot read VGG16 weights: the weights-only loader refused it ({detail}); "
            ".pth files are never fully unpickled"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing to the user
        first = re.split(r"\.\s|\n", str(e).strip())[0] or type(e).__name__
        raise VQGenError(f"{path}: cannot read VGG16 weights (need safetensors or torchvision's .pth: {first})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VQGenError(f"{path}: not a state dict of tensors, so not VGG16 weights")
    return state


def load_vgg16_features(path: str | Path) -> nn.Sequential:
    """VGG16 ``features`` up to relu5_3, with weights from ``path`` (full model or features only)."""
    state = read_vgg16_weights(path)
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    net = vgg16_features()
    wanted = net.state_dict()
    picked = {}
    for key, like in wanted.items():
        tensor = state.get(prefix + key)
        if tensor is None or tensor.shape != like.shape:
            found = "missing" if tensor is None else f"shape {tuple(tensor.shape)}"
            raise VQGenError(
                f"{path}: not torchvision VGG16 weights ({prefix + key}: {found}, expected {tuple(like.shape)})"
            )
        picked[key] = tensor.float()
    net.load_state_dict(picked)
    return net


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on frozen VGG16 features (Zhang et al. 2018), without LPIPS's learned part.

    LPIPS unit-normalises each layer's features along channels, weights the squared differences
    with learned per-channel linear layers, averages over space and sums over layers. We have no
    such learned weights, so every channel counts equally: per layer the squared distance of the
    unit-normalised features (in [0, 4]) is summed over channels and averaged over positions, and
    the five layers are averaged (the "baseline" LPIPS variant, up to that final averaging).
    """

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str | Path) -> PerceptualLoss:
        return cls(load_vgg16_features(path))

    def train(self, mode: bool = True) -> PerceptualLoss:
        return self  # frozen: stays in eval mode whatever the surrounding model does

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey images: the same value on R, G and B
        x = ((x + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x)
        return taps

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean distance over the batch between images in [-1, 1]."""
        total = recon.new_zeros((), dtype=torch.float32)
        for a, b in zip(self._taps(recon.float()), self._taps(target.float())):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (a - b).pow(2).sum(1).mean()
        return total / len(VGG16_TAPS)
