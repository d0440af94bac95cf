"""vqgen: two-stage discrete generative modelling of images (VQ-VAE + gated PixelCNN or transformer prior)."""

__version__ = "0.1.0"

from vqgen.errors import VQGenError

_API = ("load_vqvae", "load_prior", "load_pretrained", "read_images", "encode", "decode", "reconstruct", "sample_codes",
        "save_grid", "save_png")

__all__ = ["VQGenError", "__version__", *_API]


def __getattr__(name: str):
    """The Python API (vqgen.api) on demand, so ``import vqgen`` and the CLI start without torch."""
    if name in _API:
        from vqgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'vqgen' has no attribute {name!r}")
