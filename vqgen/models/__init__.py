"""The networks: VQ-VAE (encoder, quantizer (VQ, FSQ or residual VQ), decoder) and the gated PixelCNN prior."""

from vqgen.models.fsq import FiniteScalarQuantizer
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.rvq import ResidualVectorQuantizer
from vqgen.models.vqvae import VQVAE, VQVAEConfig

__all__ = [
    "FiniteScalarQuantizer", "GatedPixelCNN", "PixelCNNConfig", "ResidualVectorQuantizer", "VQVAE", "VQVAEConfig",
    "VectorQuantizer",
]
