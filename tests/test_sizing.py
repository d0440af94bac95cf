"""Network sizes that follow the data: the VQ-VAE's trunk from the images, the PixelCNN's depth from the map."""

import pytest
import torch

from vqgen.config import PixelCNNConfig, VQVAEConfig
from vqgen.models import build_prior
from vqgen.models.vqvae import VQVAE


@pytest.mark.parametrize("channels, size, expected", [
    (1, (28, 28), (64, 32, 16)),  # digits: the light trunk
    (1, (32, 32), (64, 32, 16)),
    (1, (64, 64), (128, 64, 32)),  # larger grey images
    (3, (32, 32), (128, 64, 32)),  # colour
])
def test_vqvae_sizes_follow_the_images(channels, size, expected):
    cfg = VQVAEConfig(in_channels=channels, image_size=size).sized()
    assert (cfg.hidden_channels, cfg.res_channels, cfg.head_channels) == expected


def test_given_vqvae_sizes_win_and_head_zero_stays_off():
    cfg = VQVAEConfig(in_channels=3, image_size=(32, 32), hidden_channels=48, head_channels=0).sized()
    assert (cfg.hidden_channels, cfg.res_channels, cfg.head_channels) == (48, 24, 0)
    assert VQVAEConfig(res_channels=40).sized().res_channels == 40


def test_vqvae_model_records_its_sizes():
    model = VQVAE(VQVAEConfig(in_channels=3, image_size=(32, 32), num_codes=16))
    assert model.cfg.hidden_channels == 128 and model.cfg.to_dict()["head_channels"] == 32
    assert VQVAE(VQVAEConfig.from_dict(model.cfg.to_dict())).cfg == model.cfg  # a checkpoint rebuilds the same net


@pytest.mark.parametrize("shape, layers", [((7, 7), 8), ((8, 8), 9), ((4, 6), 7), ((16, 16), 15), ((32, 32), 15)])
def test_pixelcnn_depth_follows_the_map(shape, layers):
    assert PixelCNNConfig(num_codes=8, latent_shape=shape).sized().num_layers == layers
    assert PixelCNNConfig(num_codes=8, latent_shape=shape, num_layers=3).sized().num_layers == 3


def test_default_depth_sees_the_whole_map():
    """Every logit depends on every code before it in raster order (and on no later one)."""
    torch.manual_seed(0)
    h, w = 7, 7
    model = build_prior(PixelCNNConfig(num_codes=8, latent_shape=(h, w), channels=8, dropout=0.0)).eval()
    assert model.cfg.num_layers == 8
    x = model.embed(torch.zeros(1, h, w, dtype=torch.long)).permute(0, 3, 1, 2).detach().requires_grad_()
    v = hh = x
    skips = 0.0
    for layer in model.layers:
        v, hh, skip = layer(v, hh, None)
        skips = skips + skip
    logits = model.head(skips)
    for t in range(1, h * w):
        grad, = torch.autograd.grad(logits[0, :, t // w, t % w].sum(), x, retain_graph=True)
        seen = grad.abs().sum(1)[0].flatten() > 0
        assert seen[:t].all() and not seen[t:].any(), f"position {t}"
