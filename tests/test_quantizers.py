"""FSQ, the rotation trick and residual VQ: rounding, indices, gradients, depth, and their options."""

import math

import pytest
import torch

from tests.conftest import run_cli
from vqgen.config import RVQ_CODES, VQ_CODES, TransformerConfig, VQVAEConfig
from vqgen.errors import VQGenError
from vqgen.models.fsq import FiniteScalarQuantizer, bound, digits_to_index, index_to_digits, round_ste, tail_penalty
from vqgen.models.quantizer import VectorQuantizer, rotate_onto
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models import StackPixelCNN, build_prior
from vqgen.models.rvq import ResidualVectorQuantizer, flat_codes, stacked_codes
from vqgen.sampling import cached_logits, sample_cached, sample_full

# ----------------------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels", [(8, 5, 4, 3), (2, 7), (6,)])
def test_fsq_rounding_gives_exactly_the_levels_even_and_odd(levels):
    z = torch.linspace(-30, 30, 20001)[:, None].expand(-1, len(levels))
    rounded = bound(z, torch.tensor(levels, dtype=torch.float32)).round()
    for i, n in enumerate(levels):
        values = sorted(set(rounded[:, i].tolist()))
        low = -(n // 2)  # odd: -(n-1)/2 .. (n-1)/2; even: -n/2 .. n/2 - 1 (the half-step offset)
        assert values == [float(v) for v in range(low, low + n)]
    at_zero = bound(torch.zeros(1, len(levels)), torch.tensor(levels, dtype=torch.float32))[0]
    for value, n in zip(at_zero.tolist(), levels):
        assert value == pytest.approx(-0.5 if n == 2 else 0.0, abs=1e-6)  # 0 stays at level 0 (2 levels: between)


@pytest.mark.parametrize("levels", [(8, 8, 8), (8, 6, 5), (3, 2, 4)])
def test_every_fsq_index_maps_to_a_unique_code_and_back(levels):
    k = math.prod(levels)
    table = torch.tensor(levels)
    digits = index_to_digits(torch.arange(k), table)
    assert digits.shape == (k, len(levels))
    assert ((digits >= 0) & (digits < table)).all()
    assert len({tuple(row) for row in digits.tolist()}) == k
    assert torch.equal(digits_to_index(digits, table), torch.arange(k))
    fsq = FiniteScalarQuantizer(levels, dim=8).eval()
    assert fsq.num_codes == k
    vectors = fsq.decode_indices(torch.arange(k).view(1, 1, k)).flatten(2)[0].t()  # (K, D)
    assert torch.unique(vectors, dim=0).shape[0] == k


def test_fsq_forward_encode_and_decode_agree():
    torch.manual_seed(0)
    fsq = FiniteScalarQuantizer((8, 6, 5), dim=8).eval()
    z = 3 * torch.randn(2, 8, 5, 5)
    out = fsq(z)
    assert out.indices.shape == (2, 5, 5) and int(out.indices.max()) < 240 and int(out.indices.min()) >= 0
    assert torch.equal(fsq.encode(z), out.indices)
    assert torch.allclose(fsq.decode_indices(out.indices), out.quantized, atol=1e-6)
    assert len(out.indices.unique()) > 10  # spread over the grid, not collapsed
    assert float(out.codebook_loss) == 0.0 and fsq.dead_codes() == 0
    assert out.loss.item() == pytest.approx(0.01 * out.commitment.item())  # the tail term, weight 0.01


def test_fsq_tail_penalty_is_zero_where_tanh_has_gradient_and_pulls_runaways_back():
    x = torch.tensor([-1.9, 0.0, 1.5, 2.0, 3.0, -4.0], requires_grad=True)
    penalty = tail_penalty(x)
    assert penalty.item() == pytest.approx((1.0 + 4.0) / 6)  # only 3.0 and -4.0 count: (1^2 + 2^2) / 6
    penalty.backward()
    assert torch.equal(x.grad[:4], torch.zeros(4)) and x.grad[4] > 0 > x.grad[5]  # descent moves them inward
    fsq = FiniteScalarQuantizer((8, 8), dim=2, tail_weight=0.0)
    assert fsq(torch.randn(1, 2, 3, 3) * 100).loss.item() == 0.0  # weight 0: the paper's FSQ


def test_fsq_gradients_pass_the_rounding_straight_through():
    torch.manual_seed(1)
    fsq = FiniteScalarQuantizer((5, 4), dim=6)
    z = torch.randn(2, 6, 3, 3, requires_grad=True)
    weights = torch.randn(2, 6, 3, 3)
    (fsq(z).quantized * weights).sum().backward()
    # the same network without the rounding: straight-through means the same gradient
    z2 = z.detach().clone().requires_grad_()
    flat = z2.permute(0, 2, 3, 1).reshape(-1, 6)
    smooth = fsq.project_out(bound(fsq.project_in(flat), fsq.levels.float()) / fsq.half_width.float())
    (smooth.view(2, 3, 3, 6).permute(0, 3, 1, 2) * weights).sum().backward()
    assert z.grad.abs().sum() > 0 and torch.allclose(z.grad, z2.grad, atol=1e-6)
    x = torch.tensor([0.3, 1.7], requires_grad=True)
    round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(2)) and torch.equal(round_ste(x.detach()), torch.tensor([0.0, 2.0]))


# ----------------------------------------------------------------------------- the rotation trick


def householder_rotation(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The paper's R = I - 2 r r^T + 2 q^ e^^T as an explicit matrix, for one pair of vectors."""
    e_hat, q_hat = e / e.norm(), q / q.norm()
    r = (e_hat + q_hat) / (e_hat + q_hat).norm()
    return torch.eye(len(e)) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)


def test_rotation_trick_gradient_in_a_hand_made_2d_case():
    e = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 2.0]])  # a quarter turn and twice the length
    out = rotate_onto(e, q)
    assert torch.equal(out, q)
    out.backward(torch.tensor([[1.0, 0.0]]))
    # d out / d e = lambda R with R the quarter turn [[0, -1], [1, 0]], lambda = 2: grad = 2 R^T (1, 0)
    assert torch.allclose(e.grad, torch.tensor([[0.0, -2.0]]), atol=1e-6)


def test_rotation_trick_gradient_is_the_scaled_rotation_of_the_paper():
    torch.manual_seed(2)
    e, q, g = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    e.requires_grad_()
    out = rotate_onto(e, q)
    assert torch.equal(out, q)  # the forward value is the code itself, not R e up to rounding
    out.backward(g)
    for i in range(5):
        rotation = householder_rotation(e[i].detach(), q[i])
        assert torch.allclose(rotation @ (e[i].detach() / e[i].norm()), q[i] / q[i].norm(), atol=1e-5)
        assert torch.allclose(rotation @ rotation.t(), torch.eye(4), atol=1e-5)
        expected = q[i].norm() / e[i].detach().norm() * rotation.t() @ g[i]
        assert torch.allclose(e.grad[i], expected, atol=1e-5)


@pytest.mark.parametrize("codebook_dim", [None, 3])
def test_rotation_trick_keeps_plain_vq_forward_and_changes_the_gradient(codebook_dim):
    def run(rotation: bool):
        torch.manual_seed(3)
        vq = VectorQuantizer(16, 6, kmeans_init=False, restart_dead=False, codebook_dim=codebook_dim,
                             rotation_trick=rotation).eval()
        z = torch.randn(2, 6, 4, 4, requires_grad=True)
        out = vq(z)
        (out.quantized * weights).sum().backward()
        return out, z.grad

    weights = torch.randn(2, 6, 4, 4)
    plain, plain_grad = run(False)
    rotated, rotated_grad = run(True)
    assert torch.equal(rotated.indices, plain.indices)
    assert torch.allclose(rotated.quantized, plain.quantized, atol=1e-6)
    if codebook_dim is None:  # no projection: straight-through copies the gradient itself
        assert torch.allclose(plain_grad, weights)
    assert not torch.allclose(rotated_grad, plain_grad, atol=1e-3)


# ----------------------------------------------------------------------------- residual VQ


def test_residual_vq_shapes():
    torch.manual_seed(4)
    rvq = ResidualVectorQuantizer(depth=3, num_codes=8, dim=5, codebook_dim=None)
    z = torch.randn(2, 5, 4, 6)
    out = rvq(z)
    assert out.indices.shape == (2, 3, 4, 6) and out.quantized.shape == z.shape
    assert out.indices.max() < 8 and len(rvq.stages) == 3
    rvq.eval()
    indices = rvq.encode(z)
    assert indices.shape == (2, 3, 4, 6) and torch.equal(indices, rvq(z).indices)
    assert torch.allclose(rvq.decode_indices(indices), rvq(z).quantized, atol=1e-5)


def test_residual_vq_depth_two_reconstructs_at_least_as_well_as_depth_one():
    z = torch.randn(8, 6, 5, 5)
    errors = {}
    for depth in (1, 2):
        torch.manual_seed(5)  # the same first stage in both
        rvq = ResidualVectorQuantizer(depth=depth, num_codes=16, dim=6, codebook_dim=None, restart_dead=False)
        rvq.train()(z)  # k-means on this batch, stage by stage
        rvq.eval()
        errors[depth] = float((rvq.decode_indices(rvq.encode(z)) - z).pow(2).mean())
    assert errors[2] < errors[1] < float(z.pow(2).mean())


def test_residual_vq_gradients_reach_the_encoder_and_every_stage():
    torch.manual_seed(6)
    rvq = ResidualVectorQuantizer(depth=2, num_codes=8, dim=4, codebook_dim=3, kmeans_init=False)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = rvq(z)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad.abs().sum() > 0
    assert all(stage.project_out.weight.grad.abs().sum() > 0 for stage in rvq.stages)


def test_stacks_lay_out_as_raster_order_over_position_then_depth():
    stacks = torch.randint(10, (3, 2, 4, 5))
    maps = flat_codes(stacks)
    assert maps.shape == (3, 4, 10)
    assert int(maps[1, 2, 3 * 2 + 1]) == int(stacks[1, 1, 2, 3])  # depth 1 of position (2, 3): column 7
    assert int(maps[1, 2, 3 * 2]) == int(stacks[1, 0, 2, 3])
    assert torch.equal(stacked_codes(maps, 2), stacks)
    assert torch.equal(flat_codes(stacks[:, 0]), stacks[:, 0]) and torch.equal(stacked_codes(maps, 1), maps)


def depth_prior(**overrides) -> GatedPixelCNN:
    """A small prior over stacks of depth 2 of 3x4 positions: side by side unless ``depth_heads=True``."""
    torch.manual_seed(7)
    cfg = dict(num_codes=6, latent_shape=(3, 8), channels=8, num_layers=2, kernel_size=3, code_depth=2, num_classes=2,
               depth_heads=False)
    return build_prior(PixelCNNConfig(**{**cfg, **overrides})).eval()


def test_the_prior_tells_the_depths_of_a_stack_apart():
    model = depth_prior(num_layers=1, num_classes=0)
    logits = model(torch.full((1, 3, 8), 4))
    # the same codes around columns 2 and 3 of the first row; only the depth they predict differs
    assert not torch.allclose(logits[0, :, 0, 2], logits[0, :, 0, 3])
    assert torch.allclose(logits[0, :, 0, 2], logits[0, :, 0, 4]) and logits.shape == (1, 6, 3, 8)
    plain = depth_prior(num_layers=1, num_classes=0, code_depth=1)
    assert plain.depth_embedding is None and torch.allclose(*plain(torch.full((1, 3, 8), 4))[0, :, 0, 2:4].unbind(-1))


def test_depth_heads_run_over_the_positions_and_each_code_sees_only_the_codes_before_it():
    model = depth_prior(depth_heads=True, num_layers=None)
    assert isinstance(model, StackPixelCNN) and model.cfg.positions == (3, 4) and model.cfg.num_layers == 5
    codes, labels = torch.randint(6, (2, 3, 8)), torch.tensor([0, 1])
    with torch.no_grad():
        logits = model(codes, labels).flatten(2)
        assert logits.shape == (2, 6, 24)
        for t in range(24):  # raster order over (position, depth): changing code t moves only the logits after it
            changed = codes.clone().view(2, 24)
            changed[:, t] = (changed[:, t] + 1) % 6
            moved = (model(changed.view(2, 3, 8), labels).flatten(2) - logits).abs().amax(dim=(0, 1))
            assert moved[: t + 1].max() == 0 and (t == 23 or moved[t + 1 :].max() > 0)
    side_by_side = depth_prior(num_layers=None)
    assert type(side_by_side) is GatedPixelCNN and side_by_side.cfg.positions == (3, 8)
    assert side_by_side.cfg.num_layers == 9  # the side-by-side map needs a layer a column to see a row
    with pytest.raises(VQGenError, match="build priors with vqgen.models.build_prior"):
        GatedPixelCNN(PixelCNNConfig(latent_shape=(3, 8), code_depth=2, depth_heads=True))
    # depth heads unless told side by side; sized configs record the choice
    assert PixelCNNConfig(latent_shape=(3, 8), code_depth=2).stacked
    assert PixelCNNConfig(latent_shape=(3, 8), code_depth=2).sized().depth_heads is True
    assert PixelCNNConfig(latent_shape=(3, 8)).sized().depth_heads is False
    assert not PixelCNNConfig(latent_shape=(3, 8), code_depth=2, depth_heads=False).stacked
    with pytest.raises(VQGenError, match="--depth-heads is for the codes of a residual VQ-VAE"):
        PixelCNNConfig(latent_shape=(3, 8), depth_heads=True).validate()


def test_priors_written_before_depth_heads_load_side_by_side():
    saved = depth_prior().cfg.to_dict()
    del saved["depth_heads"]
    old = PixelCNNConfig.from_dict(saved)
    assert not old.depth_heads and not old.stacked and type(build_prior(old)) is GatedPixelCNN
    assert PixelCNNConfig.from_dict(depth_prior(depth_heads=True).cfg.to_dict()).stacked


@pytest.mark.parametrize("depth_heads", [False, True])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_both_samplers_draw_the_same_stacks(guidance, depth_heads):
    model = depth_prior(label_dropout=0.2, depth_heads=depth_heads)
    labels = torch.tensor([0, 1, 1])
    codes = torch.randint(6, (3, 3, 8))
    assert torch.allclose(cached_logits(model, codes, labels), model(codes, labels), atol=1e-5)
    drawn = [sampler(model, 3, labels=labels, generator=torch.Generator().manual_seed(1), guidance=guidance)
             for sampler in (sample_full, sample_cached)]
    assert torch.equal(*drawn) and stacked_codes(drawn[0], 2).shape == (3, 2, 3, 4)
    with pytest.raises(VQGenError, match="divisible"):
        PixelCNNConfig(latent_shape=(3, 7), code_depth=2).validate()
    with pytest.raises(VQGenError, match="--arch transformer models one code per position") as refused:
        TransformerConfig(latent_shape=(3, 8), code_depth=2).validate()
    assert "--quantizer vq" in str(refused.value)  # the way to codes it takes


# ----------------------------------------------------------------------------- options


def test_quantizer_options_and_old_configs():
    fsq = VQVAEConfig(quantizer="fsq", fsq_levels="8,6,5")
    assert fsq.num_codes == 240 and fsq.fsq_shape == (8, 6, 5) and fsq.code_depth == 1
    assert VQVAEConfig.from_dict(fsq.to_dict()).num_codes == 240
    rvq = VQVAEConfig(quantizer="rvq", rvq_depth=3, num_codes=64)
    assert rvq.code_depth == 3 and rvq.total_codes == 192
    old = VQVAEConfig(num_codes=16).to_dict()
    for key in ("quantizer", "rotation_trick", "fsq_levels", "rvq_depth"):
        del old[key]
    loaded = VQVAEConfig.from_dict(old)
    assert loaded.quantizer == "vq" and not loaded.rotation_trick and loaded.code_depth == 1


def test_the_quantizer_and_its_codebook_size_follow_the_image_kind_unless_given():
    def chosen(**options) -> tuple[str, int, int]:
        cfg = VQVAEConfig(**options).sized()
        return cfg.quantizer, cfg.num_codes, cfg.code_depth

    assert chosen(in_channels=3, image_size=(32, 32)) == ("rvq", RVQ_CODES, 2)  # photos: two codebooks
    assert chosen(in_channels=1, image_size=(28, 28)) == ("vq", VQ_CODES, 1)  # digits
    assert chosen(in_channels=3, image_size=(8, 8)) == ("vq", VQ_CODES, 1)  # tiny colour images: as grey ones
    assert chosen(in_channels=3, image_size=(32, 32), levels=2) == ("vq", VQ_CODES, 1)  # rvq has one level
    assert chosen(in_channels=3, image_size=(32, 32), quantizer="vq") == ("vq", VQ_CODES, 1)
    assert chosen(in_channels=1, image_size=(28, 28), quantizer="rvq", rvq_depth=3) == ("rvq", RVQ_CODES, 3)
    assert chosen(in_channels=3, image_size=(32, 32), num_codes=64) == ("rvq", 64, 2)
    assert chosen(in_channels=3, image_size=(32, 32), quantizer="fsq", fsq_levels="5,4") == ("fsq", 20, 1)
    # the open config answers for its images before it is sized, and validates as sized
    photos = VQVAEConfig(in_channels=3, image_size=(32, 32))
    assert photos.quantizer is None and photos.code_depth == 2 and photos.total_codes == 2 * RVQ_CODES
    photos.validate()
    assert VQVAEConfig.from_dict(photos.sized().to_dict()).sized() == photos.sized()


@pytest.mark.parametrize("options, message", [
    (dict(quantizer="pq"), "--quantizer must be one of vq, fsq, rvq, not 'pq'"),
    (dict(quantizer="fsq", fsq_levels="8,x"), "--fsq-levels must be comma-separated integers"),
    (dict(quantizer="fsq", fsq_levels="8,1"), "--fsq-levels must be comma-separated integers of at least 2"),
    (dict(quantizer="fsq", rotation_trick=True), "--rotation-trick needs a codebook"),
    (dict(quantizer="rvq", rvq_depth=1), "--rvq-depth must be at least 2"),
])
def test_bad_quantizer_options_are_one_line_errors(options, message):
    with pytest.raises(VQGenError, match=message.replace("(", r"\(")) as error:
        VQVAEConfig(**options).validate()
    assert "\n" not in str(error.value)


def test_quantizer_flags_on_the_command_line(tmp_path):
    shown = run_cli("train-vqvae", "--help").output
    assert all(flag in shown for flag in ("--quantizer", "--fsq-levels", "--rvq-depth", "--rotation-trick"))
    bad = run_cli("train-vqvae", "--quantizer", "fsq", "--fsq-levels", "8,0", "--out", tmp_path / "v.safetensors",
                  ok=False)
    assert bad.exit_code == 1 and "error: --fsq-levels must be comma-separated integers" in bad.output
    assert not (tmp_path / "v.safetensors").exists()


@pytest.mark.parametrize("quantizer, extra", [("vq", {}), ("fsq", {"num_codes": 512})])
def test_rvq_depth_is_checked_for_rvq_only(quantizer, extra):
    VQVAEConfig(quantizer=quantizer, rvq_depth=1, **extra).validate()  # ignored by vq and fsq: no error
    assert VQVAEConfig(quantizer=quantizer, rvq_depth=1, **extra).code_depth == 1
