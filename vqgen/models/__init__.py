"""The networks: VQ-VAE (encoder, quantizer, decoder) and the gated PixelCNN prior."""

from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.vqvae import VQVAE, VQVAEConfig

__all__ = ["GatedPixelCNN", "PixelCNNConfig", "VQVAE", "VQVAEConfig", "VectorQuantizer"]
