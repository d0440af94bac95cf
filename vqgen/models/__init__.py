"""The networks: VQ-VAE (encoder, quantizer (VQ, FSQ or residual VQ), decoder) and the priors (gated PixelCNN,
transformer)."""

from vqgen.config import PriorConfig
from vqgen.models.fsq import FiniteScalarQuantizer
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.prior import CodePrior
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.rvq import ResidualVectorQuantizer
from vqgen.models.transformer import TransformerConfig, TransformerPrior
from vqgen.models.vqvae import VQVAE, VQVAEConfig

PRIOR_MODELS: dict[str, type[CodePrior]] = {"pixelcnn": GatedPixelCNN, "transformer": TransformerPrior}


def build_prior(cfg: PriorConfig) -> CodePrior:
    """The prior of ``cfg``'s architecture (``cfg.arch``), freshly initialised."""
    return PRIOR_MODELS[cfg.arch](cfg)


__all__ = [
    "PRIOR_MODELS", "CodePrior", "FiniteScalarQuantizer", "GatedPixelCNN", "PixelCNNConfig", "ResidualVectorQuantizer",
    "TransformerConfig", "TransformerPrior", "VQVAE", "VQVAEConfig", "VectorQuantizer", "build_prior",
]
