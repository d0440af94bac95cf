"""VQ-VAE-2 (--levels 2) and the scaled networks: shapes, options, old configs, the conditioned bottom prior."""

import pytest
import torch
import torch.nn as nn

from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.files import save_vqgen_file
from vqgen.errors import VQGenError
from vqgen.models.blocks import ResidualBlock, SelfAttention
from vqgen.config import prior_config_from_dict
from vqgen.models import TwoLevelPrior, TwoLevelPriorConfig, build_prior
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.sampling import SAMPLERS, TIE_TOLERANCE, cached_logits, sample_cached, sample_full, sample_maps

K = 16


def small(**overrides) -> VQVAEConfig:
    base = dict(hidden_channels=8, res_channels=4, num_res_blocks=1, num_codes=K, code_dim=4, kmeans_init=False)
    return VQVAEConfig(**{**base, **overrides})


# ----------------------------------------------------------------------------- the VQ-VAE


@pytest.mark.parametrize("size,mult,bottom,top", [(32, None, 8, 4), (64, "1,2,2", 16, 8)])
def test_two_levels_have_a_bottom_map_at_f4_and_a_top_map_at_f8(size, mult, bottom, top):
    torch.manual_seed(0)
    cfg = small(in_channels=3, image_size=(size, size), levels=2, channel_mult=mult)
    model = VQVAE(cfg).eval()
    images = torch.rand(2, 3, size, size)
    assert cfg.latent_shape == (bottom, bottom) and cfg.top_latent_shape == (top, top)

    features = model.encoder(model.to_model(images))
    assert features.shape == (2, cfg.latent_channels, bottom, bottom)
    assert model.top.encoder(features).shape == (2, cfg.code_dim, top, top)
    quantizers = model.quantizers
    assert set(quantizers) == {"bottom", "top"} and quantizers["bottom"] is not quantizers["top"]
    assert all(q.codebook.shape == (K, 6) for q in quantizers.values())  # one codebook per level
    top_vectors = quantizers["top"].decode_indices(torch.randint(K, (2, top, top)))
    assert model.top.decoder(top_vectors).shape == (2, cfg.code_dim, bottom, bottom)
    assert model.decoder.net[0].in_channels == 2 * cfg.code_dim  # bottom vectors beside the upsampled top ones

    recon, q = model(images)
    assert recon.shape == images.shape
    assert q.indices.shape == (2, bottom, bottom) and q.top.indices.shape == (2, top, top)
    assert torch.allclose(q.loss, model(images)[1].loss)
    codes = model.encode(images)
    assert [c.shape for c in codes] == [(2, top, top), (2, bottom, bottom)]
    assert torch.equal(codes[0], q.top.indices) and torch.equal(codes[1], q.indices)
    decoded = model.decode(codes)
    assert decoded.shape == images.shape and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(VQGenError, match="two levels"):
        model.decode(codes[1])


def test_the_top_codes_steer_the_bottom_codes_and_the_decoder():
    torch.manual_seed(0)
    model = VQVAE(small(in_channels=3, image_size=(32, 32), levels=2)).eval()
    top, bottom = model.encode(torch.rand(2, 3, 32, 32))
    other_top = (top + 1) % K
    assert not torch.equal(model.decode((top, bottom)), model.decode((other_top, bottom)))
    features = model.encoder(model.to_model(torch.rand(1, 3, 32, 32)))
    vectors = [model.top.quantizer.decode_indices(t[:1]) for t in (top, other_top)]
    inputs = [model.top.bottom_input(features, v) for v in vectors]
    assert not torch.allclose(*inputs)


def test_training_reaches_every_level():
    torch.manual_seed(0)
    model = VQVAE(small(in_channels=3, image_size=(32, 32), levels=2, ema=False, norm="group", attention=True))
    recon, q = model(torch.rand(4, 3, 32, 32))
    (recon.square().mean() + q.loss).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert model.top.quantizer.codebook.grad.abs().sum() > 0  # the codebook loss of the top level counts


def test_group_norm_and_attention_are_where_they_are_asked_for():
    def count(model: nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in model.modules())

    plain = VQVAE(small())
    assert count(plain, nn.GroupNorm) == count(plain, SelfAttention) == 0
    both = VQVAE(small(norm="group", attention=True, levels=2, image_size=(32, 32)))
    # encoder, decoder and the top level's encoder and decoder: one attention block each
    assert count(both, SelfAttention) == 4
    assert count(both, nn.GroupNorm) > 0 and count(VQVAE(small(norm="group")), SelfAttention) == 0
    scaled = VQVAE(small(image_size=(32, 32), channel_mult="1,2,4"))
    widths = [m.conv3.in_channels for m in scaled.encoder.net if isinstance(m, ResidualBlock)]
    assert widths == [8, 16, 32]  # residual blocks at every resolution, hidden x multiplier channels
    assert scaled.decoder.last_layer.out_channels == 1
    assert scaled(torch.rand(2, 1, 32, 32))[0].shape == (2, 1, 32, 32)


def test_a_one_level_model_keeps_the_parameters_of_the_plain_vq_vae():
    keys = set(VQVAE(small()).state_dict())
    plain_encoder = {f"encoder.net.{i}.{p}" for i in (0, 2, 4, 7) for p in ("weight", "bias")}
    plain_encoder |= {f"encoder.net.5.conv{k}.{p}" for k in (1, 3) for p in ("weight", "bias")}
    assert {k for k in keys if k.startswith("encoder.")} == plain_encoder
    assert not [k for k in keys if k.startswith("top.") or "norm" in k]


@pytest.mark.parametrize("overrides,message", [
    (dict(levels=3), "--levels must be 1 or 2"),
    (dict(levels=2), "not divisible by the downsampling factor 8"),  # 28x28
    (dict(channel_mult="1,2"), "--channel-mult needs 3 multipliers"),
    (dict(channel_mult="1,x,2"), "--channel-mult must be whole numbers"),
    (dict(channel_mult="1,0,2"), "at least 1"),
    (dict(norm="batch"), "--norm must be one of none, group"),
])
def test_bad_network_options_are_one_line_errors(overrides, message):
    with pytest.raises(VQGenError, match=message):
        small(**overrides).validate()


def test_a_one_level_checkpoint_without_the_new_fields_still_loads(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(small(kmeans_init=True))
    config = model.cfg.to_dict()
    for field in ("levels", "channel_mult", "norm", "attention"):
        del config[field]  # as a checkpoint written before they existed
    path = tmp_path / "old.safetensors"
    meta = {"kind": "vqvae", "config": config, "image": {"channels": 1, "size": [28, 28]}}
    save_vqgen_file(path, model.state_dict(), meta)
    loaded, _ = load_vqvae(path)
    assert (loaded.cfg.levels, loaded.cfg.channel_mult, loaded.cfg.norm, loaded.cfg.attention) == (1, None, "none", False)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    codes = torch.randint(K, (2, 7, 7))
    assert torch.equal(loaded.decode(codes), model.eval().decode(codes))


# ----------------------------------------------------------------------------- the conditioned bottom prior


def bottom_prior(num_classes: int = 3, label_dropout: float = 0.0, layers: int = 6, seed: int = 0) -> GatedPixelCNN:
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(
        num_codes=K, latent_shape=(4, 6), channels=16, num_layers=layers, num_classes=num_classes, head_channels=16,
        label_dropout=label_dropout, cond_codes=K, cond_shape=(2, 3),
    )
    return GatedPixelCNN(cfg).eval()


def test_the_bottom_logits_see_only_earlier_bottom_codes_but_the_whole_top_map():
    model = bottom_prior()
    codes, top, labels = torch.randint(K, (2, 4, 6)), torch.randint(K, (2, 2, 3)), torch.tensor([0, 2])
    captured = {}

    def keep(name):
        return lambda module, inputs, out: captured.__setitem__(name, out) or out.retain_grad()

    hooks = [model.embedding.register_forward_hook(keep("bottom")),
             model.cond_stack.embedding.register_forward_hook(keep("top"))]
    for i in range(4):
        for j in range(6):
            model.zero_grad()
            model(codes, labels, cond=top)[:, :, i, j].sum().backward()
            grad = captured["bottom"].grad.abs().sum(dim=(0, 3))
            before = torch.zeros(4, 6, dtype=torch.bool)
            before.view(-1)[: i * 6 + j] = True
            assert torch.count_nonzero(grad[~before]) == 0, f"position {(i, j)} sees itself or later bottom codes"
            assert (grad[before] > 0).all(), f"position {(i, j)} misses part of its past"
            assert captured["top"].grad.abs().sum() > 0  # the top map informs every position, the first one too
    for hook in hooks:
        hook.remove()
    with pytest.raises(VQGenError, match="conditioned on the top code map"):
        model(codes, labels)


@pytest.mark.parametrize("guidance,top_k", [(1.0, None), (2.5, 4)])
def test_cached_and_full_samplers_draw_the_same_bottom_codes(guidance, top_k):
    model = bottom_prior(label_dropout=0.2)
    with torch.no_grad():
        model.head[3].weight.mul_(20)  # sharp logits, as after training: near-ties matter
    top, labels = torch.randint(K, (5, 2, 3)), torch.tensor([0, 1, 2, 0, 1])
    codes = torch.randint(K, (5, 4, 6))
    with torch.no_grad():
        full_logits = model(codes, labels, cond=top)
    error = (cached_logits(model, codes, labels, cond=top) - full_logits).abs()
    assert (error <= TIE_TOLERANCE / 10 * (1 + full_logits.abs().amax(1, keepdim=True))).all()
    drawn = [sampler(model, 5, labels=labels, top_k=top_k, guidance=guidance, cond=top,
                     generator=torch.Generator().manual_seed(3)) for sampler in (sample_cached, sample_full)]
    assert torch.equal(*drawn)
    other_top = sample_cached(model, 5, labels=labels, top_k=top_k, guidance=guidance, cond=(top + 1) % K,
                              generator=torch.Generator().manual_seed(3))
    assert not torch.equal(drawn[0], other_top)  # the top map steers the draw


def test_two_level_prior_config_round_trips_and_samples_top_then_bottom():
    base = PixelCNNConfig(num_codes=K, latent_shape=(4, 4), channels=8, num_layers=2, num_classes=2, head_channels=8)
    cfg = TwoLevelPriorConfig.for_maps(base, (2, 2))
    assert (cfg.top.latent_shape, cfg.top.cond_codes, cfg.bottom.cond_codes, cfg.bottom.cond_shape) == ((2, 2), 0, K, (2, 2))
    torch.manual_seed(0)
    prior = TwoLevelPrior(cfg).eval()
    rebuilt = build_prior(prior_config_from_dict(cfg.to_dict()))
    assert isinstance(rebuilt, TwoLevelPrior) and rebuilt.cfg == prior.cfg
    rebuilt.load_state_dict(prior.state_dict())
    assert isinstance(build_prior(prior_config_from_dict(base.to_dict())), GatedPixelCNN)

    labels = torch.tensor([0, 1, 1])
    top, bottom = sample_maps(SAMPLERS["cached"], prior, 3, labels=labels, generator=torch.Generator().manual_seed(1))
    assert top.shape == (3, 2, 2) and bottom.shape == (3, 4, 4)
    generator = torch.Generator().manual_seed(1)
    alone = sample_cached(prior.top, 3, labels=labels, generator=generator)
    assert torch.equal(alone, top)
    assert torch.equal(sample_cached(prior.bottom, 3, labels=labels, generator=generator, cond=top), bottom)
