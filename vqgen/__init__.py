"""vqgen: two-stage discrete generative modelling of images (VQ-VAE + gated PixelCNN prior)."""

__version__ = "0.1.0"

from vqgen.errors import VQGenError

__all__ = ["VQGenError", "__version__"]
