"""The networks: VQ-VAE (encoder, quantizer (VQ, FSQ or residual VQ), decoder) and the priors (gated PixelCNN,
transformer, the masked prior (a transformer or convolutions), and the two-level prior of VQ-VAE-2)."""

from collections.abc import Callable

import torch.nn as nn

from vqgen.config import PriorConfig, TwoLevelPriorConfig
from vqgen.models.fsq import FiniteScalarQuantizer
from vqgen.models.hierarchy import TwoLevelPrior
from vqgen.models.masked import MaskedConvPrior, MaskedTransformerPrior, masked_prior
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.prior import CodePrior
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.rvq import ResidualVectorQuantizer
from vqgen.models.stacks import StackPixelCNN
from vqgen.models.transformer import TransformerConfig, TransformerPrior
from vqgen.models.vqvae import VQVAE, VQVAEConfig


def pixelcnn_prior(cfg: PixelCNNConfig) -> GatedPixelCNN:
    """The gated PixelCNN; over residual VQ stacks, with a head per depth unless ``cfg.depth_heads`` is off."""
    return StackPixelCNN(cfg) if cfg.stacked else GatedPixelCNN(cfg)


PRIOR_MODELS: dict[str, Callable[..., CodePrior]] = {
    "pixelcnn": pixelcnn_prior, "transformer": TransformerPrior, "masked": masked_prior,
}


def build_prior(cfg: PriorConfig | TwoLevelPriorConfig) -> nn.Module:
    """The prior of ``cfg``'s architecture (``cfg.arch``), or both priors of two levels, freshly initialised."""
    if isinstance(cfg, TwoLevelPriorConfig):
        return TwoLevelPrior(cfg)
    return PRIOR_MODELS[cfg.arch](cfg)


__all__ = [
    "PRIOR_MODELS", "CodePrior", "FiniteScalarQuantizer", "GatedPixelCNN", "MaskedConvPrior", "MaskedTransformerPrior",
    "PixelCNNConfig", "ResidualVectorQuantizer", "StackPixelCNN", "TransformerConfig", "TransformerPrior",
    "TwoLevelPrior", "TwoLevelPriorConfig", "VQVAE", "VQVAEConfig", "VectorQuantizer", "build_prior",
]
