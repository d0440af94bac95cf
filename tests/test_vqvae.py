"""The VQ-VAE network: shapes, the decoder head, the default low-dimensional codebook, old configs."""

import torch
import torch.nn as nn

from vqgen.models.vqvae import VQVAE, VQVAEConfig


def small(**overrides) -> VQVAEConfig:
    return VQVAEConfig(hidden_channels=16, res_channels=8, num_res_blocks=1, num_codes=16, code_dim=8, **overrides)


def test_default_codes_are_six_dimensional_and_decode_to_d_channels():
    model = VQVAE(small(kmeans_init=False)).eval()
    assert model.quantizer.codebook.shape == (16, 6)
    indices = torch.randint(16, (2, 7, 7))
    assert model.quantizer.decode_indices(indices).shape == (2, 8, 7, 7)
    assert model.decode(indices).shape == (2, 1, 28, 28)


def test_the_head_is_a_full_resolution_conv_after_the_last_upsampling():
    with_head = VQVAE(small(head_channels=4)).decoder
    assert isinstance(with_head.last_layer, nn.Conv2d) and with_head.last_layer.kernel_size == (3, 3)
    assert with_head.last_layer.in_channels == 4 and with_head.last_layer.out_channels == 1
    without = VQVAE(small(head_channels=0)).decoder
    assert isinstance(without.last_layer, nn.ConvTranspose2d) and without.last_layer.out_channels == 1
    z = torch.randn(2, 8, 7, 7)
    assert with_head(z).shape == without(z).shape == (2, 1, 28, 28)


def test_a_config_saved_before_the_head_existed_builds_the_same_network():
    old = small(head_channels=0).to_dict()
    del old["head_channels"]
    cfg = VQVAEConfig.from_dict(old)
    assert cfg.head_channels == 0
    VQVAE(cfg).load_state_dict(VQVAE(small(head_channels=0)).state_dict())  # same parameters, strict load
