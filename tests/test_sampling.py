"""The cached sampler (issue 4) against the full-recompute reference, for both architectures; classifier-free guidance."""

from dataclasses import replace

import pytest
import torch

from vqgen.errors import VQGenError
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.pixelcnn_cache import CachedPixelCNN
from vqgen.models.transformer import CachedTransformer
from vqgen.sampling import (
    SAMPLERS,
    TIE_TOLERANCE,
    Guidance,
    cached_logits,
    check_guidance,
    choose_residual_temperature,
    exact_float32,
    is_decisive,
    raster_temperatures,
    sample_cached,
    sample_full,
)

K = 32


def make_prior(
    shape, kernel_size: int, num_classes: int = 0, logit_scale: float = 1.0, seed: int = 0, label_dropout: float = 0.0,
    attention_heads: int = 0,
) -> GatedPixelCNN:
    """A small random prior (``kernel_size`` None: a transformer); ``logit_scale`` sharpens its output like
    training does; ``attention_heads``: a PixelCNN with its attention block, past its zero start."""
    if kernel_size is None:
        from tests.test_transformer import make_prior as make_transformer

        return make_transformer(shape, num_classes, logit_scale, seed, label_dropout)
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(
        num_codes=K, latent_shape=shape, channels=32, num_layers=4, kernel_size=kernel_size,
        num_classes=num_classes, head_channels=32, label_dropout=label_dropout, attention_heads=attention_heads,
    )
    model = GatedPixelCNN(cfg).eval()
    with torch.no_grad():
        model.head[3].weight.mul_(logit_scale)
        if model.attention is not None:
            torch.nn.init.normal_(model.attention.attention.out.weight, std=0.3)
    return model


def labels_for(model: GatedPixelCNN, n: int):
    return torch.arange(n) % model.cfg.num_classes if model.conditional else None


# (latent shape, kernel size, classes): square, non-square, wider kernel than the map, one column; then the
# transformer (kernel size None), down to one position
LOGIT_CASES = [((4, 4), 3, 0), ((7, 7), 5, 3), ((5, 9), 7, 0), ((5, 9), 3, 4), ((2, 3), 7, 0), ((3, 1), 5, 2),
               ((4, 4), None, 0), ((7, 7), None, 3), ((5, 9), None, 0), ((3, 1), None, 2), ((1, 1), None, 0)]


@pytest.mark.parametrize("shape,kernel_size,num_classes", LOGIT_CASES)
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_cached_logits_equal_the_full_pass_at_every_position(shape, kernel_size, num_classes, logit_scale):
    model = make_prior(shape, kernel_size, num_classes, logit_scale)
    codes = torch.randint(0, K, (6, *shape))
    labels = labels_for(model, 6)
    with torch.no_grad():
        full = model(codes, labels)
    cached = cached_logits(model, codes, labels)
    error = (cached - full).abs()
    scale = 1 + full.abs().amax(dim=1, keepdim=True)
    # the bound sample_cached's near-tie check assumes, with a 10x margin
    assert (error <= TIE_TOLERANCE / 10 * scale).all(), f"max error {error.max().item():.3g}"
    if logit_scale == 1.0:
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


# (latent shape, kernel size, classes, temperature, top-k)
SAMPLE_CASES = [
    ((4, 4), 3, 0, 1.0, None),
    ((7, 7), 5, 3, 0.8, 5),
    ((5, 9), 5, 0, 1.3, 10),
    ((5, 9), 3, 4, 1.0, None),
    ((6, 4), 7, 0, 0.5, 3),
    ((7, 7), 7, 2, 1.0, 1),
    ((4, 4), None, 0, 1.0, None),  # the transformer
    ((7, 7), None, 3, 0.8, 5),
    ((5, 9), None, 0, 1.3, 10),
    ((6, 4), None, 2, 0.5, 1),
]


@pytest.mark.parametrize("shape,kernel_size,num_classes,temperature,top_k", SAMPLE_CASES)
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_cached_sampler_draws_exactly_the_codes_of_the_full_sampler(
    shape, kernel_size, num_classes, temperature, top_k, logit_scale
):
    model = make_prior(shape, kernel_size, num_classes, logit_scale)
    labels = labels_for(model, 8)
    generators = [torch.Generator().manual_seed(123) for _ in range(2)]
    full = sample_full(model, 8, labels, temperature, top_k, generators[0])
    cached = sample_cached(model, 8, labels, temperature, top_k, generators[1])
    assert cached.shape == (8, *shape) and cached.dtype == torch.long
    assert torch.equal(cached, full)
    # here the cached logits alone already give the same codes, without the near-tie check
    assert torch.equal(sample_cached(model, 8, labels, temperature, top_k, torch.Generator().manual_seed(123), tolerance=0), full)
    if top_k != 1:
        assert full.unique().numel() > 1, "degenerate case: every code the same"
    # both consumed the same random numbers, in the same amount
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))


# (latent shape, classes, temperature, top-k, guidance) of a PixelCNN with 4 attention heads
ATTENTION_CASES = [((4, 4), 0, 1.0, None, 1.0), ((7, 7), 3, 0.8, 5, 1.0), ((5, 9), 3, 1.0, None, 2.0),
                   ((3, 1), 2, 1.3, None, 1.0)]


@pytest.mark.parametrize("shape,num_classes,temperature,top_k,guidance", ATTENTION_CASES)
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_the_attention_block_caches_and_samples_like_the_full_pass(shape, num_classes, temperature, top_k, guidance,
                                                                   logit_scale):
    model = make_prior(shape, 3, num_classes, logit_scale, label_dropout=0.2 if guidance != 1 else 0.0,
                       attention_heads=4)
    codes = torch.randint(0, K, (6, *shape))
    labels = labels_for(model, 6)
    with torch.no_grad():
        full_logits = model(codes, labels)
    error = (cached_logits(model, codes, labels) - full_logits).abs()
    assert (error <= TIE_TOLERANCE / 10 * (1 + full_logits.abs().amax(dim=1, keepdim=True))).all()
    generators = [torch.Generator().manual_seed(9) for _ in range(2)]
    full = sample_full(model, 6, labels, temperature, top_k, generators[0], guidance=guidance)
    cached = sample_cached(model, 6, labels, temperature, top_k, generators[1], guidance=guidance)
    assert torch.equal(cached, full) and full.unique().numel() > 1
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))


def test_top_1_sampling_is_the_argmax_of_the_full_pass():
    model = make_prior((4, 5), 5, logit_scale=30.0)
    codes = sample_cached(model, 3, top_k=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(codes).argmax(dim=1), codes)


@pytest.mark.parametrize("shape,kernel_size,num_classes,attention_heads",
                         [((5, 6), 5, 0, 0), ((4, 7), 3, 3, 0), ((6, 4), 7, 0, 0), ((5, 6), None, 0, 0),
                          ((4, 7), None, 3, 0), ((5, 6), 3, 3, 4)])
def test_full_pass_is_causal_in_floating_point(shape, kernel_size, num_classes, attention_heads):
    """What the near-tie check relies on: the logits at (i, j) of a full pass over the finished map
    are bit for bit those of a pass over the map with zeros from (i, j) on (as sample_full has it)."""
    model = make_prior(shape, kernel_size, num_classes, logit_scale=10.0, attention_heads=attention_heads)
    codes = torch.randint(0, K, (6, *shape))
    labels = labels_for(model, 6)
    h, w = shape
    with torch.no_grad():
        finished = model(codes, labels)
        for t in range(h * w):
            partial = codes.clone().view(6, -1)
            partial[:, t:] = 0
            i, j = divmod(t, w)
            assert torch.equal(model(partial.view(6, h, w), labels)[:, :, i, j], finished[:, :, i, j]), (i, j)


def test_is_decisive_on_hand_made_logits():
    noise = torch.zeros(1, 4)
    assert is_decisive(torch.tensor([[3.0, 1.0, 0.0, -1.0]]), noise, 1.0, None, 1e-5)
    assert not is_decisive(torch.tensor([[3.0, 3.0 - 1e-6, 0.0, -1.0]]), noise, 1.0, None, 1e-5)
    # code 2 is left out of the top-2 by 1e-6 only: inside it (as the full pass may have it), it wins
    boundary = torch.tensor([[2.0, 1.0, 1.0 - 1e-6, -5.0]])
    assert not is_decisive(boundary, torch.tensor([[0.0, 0.0, 5.0, 0.0]]), 1.0, 2, 1e-5)
    assert is_decisive(boundary, torch.tensor([[0.0, 0.0, 5.0, 0.0]]), 1.0, 3, 1e-5)
    assert is_decisive(boundary, torch.tensor([[0.0, 0.0, 0.5, 0.0]]), 1.0, 2, 1e-5)  # it would lose anyway
    # the winner itself sits on the top-k boundary
    assert not is_decisive(boundary, torch.tensor([[0.0, 5.0, 0.0, 0.0]]), 1.0, 2, 1e-5)
    assert is_decisive(boundary, torch.tensor([[0.0, 5.0, 0.0, 0.0]]), 1.0, 3, 1e-5)


def test_samplers_are_registered_and_need_labels_when_conditional():
    assert SAMPLERS["cached"] is sample_cached and SAMPLERS["full"] is sample_full
    model = make_prior((3, 3), 3, num_classes=2)
    with pytest.raises(VQGenError, match="labels are required"):
        sample_cached(model, 2)


# ----------------------------------------------------------------------------- classifier-free guidance


def guided_prior(shape=(5, 6), kernel_size: int | None = 3, logit_scale: float = 10.0) -> torch.nn.Module:
    """A conditional prior with a null row whose bias (kernel_size None: a transformer, whose start
    token) differs clearly from the classes'."""
    if kernel_size is None:  # its own scale: make_transformer sharpens the head 20-fold already
        model = make_prior(shape, None, num_classes=3, label_dropout=0.2)
        with torch.no_grad():
            model.start.weight.mul_(50.0)  # past the 0.02 initialisation
        return model
    model = make_prior(shape, kernel_size, num_classes=3, logit_scale=logit_scale, label_dropout=0.2)
    with torch.no_grad():
        for layer in model.layers:
            layer.cond.weight.mul_(3.0)
    return model


def test_guidance_combines_hand_made_logits():
    labels = torch.tensor([0, 2])
    guide = Guidance(2.0, labels, lambda: torch.tensor([9, 9]))
    assert guide.labels.tolist() == [0, 2, 9, 9] and guide.batch_size(2) == 4
    assert guide.rows(torch.tensor([[1], [2]])).tolist() == [[1], [2], [1], [2]]
    cond, uncond = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 6.0], [1.0, -1.0, 0.5]])
    combined = guide.combine(torch.cat([cond, uncond]))
    assert torch.equal(combined, torch.tensor([[2.0, 4.0, 0.0], [-1.0, 1.0, -0.5]]))  # uncond + 2 (cond - uncond)
    assert torch.equal(Guidance(0.0, labels, lambda: torch.tensor([9, 9])).combine(torch.cat([cond, uncond])), uncond)
    # S = 1: the conditional rows alone, untouched, and no null labels asked for
    plain = Guidance(1.0, labels, lambda: pytest.fail("S = 1 must not build the unconditional half"))
    assert plain.labels is labels and plain.batch_size(2) == 2 and plain.combine(cond) is cond
    # the tie tolerance grows with S: each half's error is amplified by |1 - S| + S
    assert plain.tolerance(1e-5) == 1e-5 and guide.tolerance(1e-5) > 3e-5
    assert torch.equal(guide.magnitude(torch.cat([cond, uncond])), torch.tensor([[7.0], [2.0]]))


# (latent shape, kernel size, temperature, top-k)
GUIDED_CASES = [((5, 6), 3, 1.0, None), ((4, 7), 5, 0.8, 5), ((6, 4), 3, 1.3, 10), ((5, 6), None, 1.0, None),
                ((4, 7), None, 0.8, 5)]


@pytest.mark.parametrize("shape,kernel_size,temperature,top_k", GUIDED_CASES)
@pytest.mark.parametrize("guidance", [1.5, 3.0])
def test_guided_samplers_draw_identical_codes(shape, kernel_size, temperature, top_k, guidance):
    model = guided_prior(shape, kernel_size)
    labels = torch.arange(6) % 3
    generators = [torch.Generator().manual_seed(11) for _ in range(3)]
    full = sample_full(model, 6, labels, temperature, top_k, generators[0], guidance=guidance)
    cached = sample_cached(model, 6, labels, temperature, top_k, generators[1], guidance=guidance)
    assert torch.equal(cached, full)
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))
    plain = sample_full(model, 6, labels, temperature, top_k, generators[2])
    assert not torch.equal(full, plain), "guidance changed nothing"


# the CUDA cases join whenever a GPU is present: there cuDNN's TF32 default would break the equality (issue 20)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size", [3, None])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_samplers_draw_identical_codes_on_every_device(device, kernel_size, guidance):
    model = guided_prior((6, 5), kernel_size).to(device)
    labels = torch.arange(8) % 3
    generators = [torch.Generator().manual_seed(5) for _ in range(2)]
    full = sample_full(model, 8, labels, 1.0, None, generators[0], device=device, guidance=guidance)
    cached = sample_cached(model, 8, labels, 1.0, None, generators[1], device=device, guidance=guidance)
    assert full.device.type == device and torch.equal(cached, full)
    assert full.unique().numel() > 1, "degenerate case: every code the same"
    cpu_codes = sample_full(model.cpu(), 8, labels, 1.0, None, torch.Generator().manual_seed(5), guidance=guidance)
    assert (cpu_codes == full.cpu()).float().mean() > 0.9  # the same draws up to rare float near-ties


def test_guidance_1_is_plain_conditional_sampling_without_the_unconditional_half(monkeypatch):
    model = guided_prior()
    labels = torch.tensor([0, 1, 2, 0])
    batch_sizes = []
    model.register_forward_hook(lambda module, args, out: batch_sizes.append(len(args[0])))
    cache_sizes = []
    cache_init = CachedPixelCNN.__init__

    def recording_init(self, prior, n, y=None):
        cache_sizes.append(n)
        cache_init(self, prior, n, y)

    monkeypatch.setattr(CachedPixelCNN, "__init__", recording_init)
    for sampler in (sample_full, sample_cached):
        default = sampler(model, 4, labels, 0.9, 8, torch.Generator().manual_seed(2))
        assert torch.equal(sampler(model, 4, labels, 0.9, 8, torch.Generator().manual_seed(2), guidance=1.0), default)
    assert set(batch_sizes) <= {4} and set(cache_sizes) == {4}
    batch_sizes.clear()
    sample_full(model, 4, labels, guidance=2.0, generator=torch.Generator().manual_seed(2))
    sample_cached(model, 4, labels, guidance=2.0, generator=torch.Generator().manual_seed(2))
    assert set(batch_sizes) == {8} and cache_sizes[-1] == 8  # both halves in one batched pass


def near_tie_case(case: str):
    """(model, labels, cache class, its method giving the cached logits) of a near-tie test case."""
    from tests.test_transformer import make_prior as make_transformer

    if case == "pixelcnn":
        return make_prior((6, 6), 5, logit_scale=10.0), None, CachedPixelCNN, "logits"
    labels = torch.arange(8) % 3
    if case == "guided pixelcnn":
        return guided_prior((6, 6), 5, logit_scale=3.0), labels, CachedPixelCNN, "logits"
    if case == "pixelcnn with attention":  # a redraw refills the attention's keys from the map's start
        return make_prior((6, 6), 3, logit_scale=10.0, attention_heads=4), None, CachedPixelCNN, "logits"
    model = make_transformer((6, 6), num_classes=3, logit_scale=0.5, label_dropout=0.2)
    return model, labels, CachedTransformer, "step_logits"


# (case, top-k, guidance)
NEAR_TIE_CASES = [("pixelcnn", None, 1.0), ("pixelcnn", 3, 1.0), ("guided pixelcnn", None, 2.5),
                  ("guided transformer", None, 2.0), ("pixelcnn with attention", None, 1.0)]


@pytest.mark.parametrize("case,top_k,guidance", NEAR_TIE_CASES)
def test_near_tie_check_keeps_codes_exact_when_cached_logits_are_off(monkeypatch, case, top_k, guidance):
    """Perturb the cached logits (with guidance: each half's) by up to half the tolerance: the check
    must catch and correct every draw the perturbation flips (redrawing the rest of the map from the
    same random numbers, the cache refilled up to there), so the codes still equal the full
    sampler's; without the check they do not."""
    model, labels, cache, method = near_tie_case(case)
    tolerance = 0.01
    noise_gen = torch.Generator().manual_seed(7)
    exact_logits = getattr(cache, method)

    def perturbed(self, *position):
        logits = exact_logits(self, *position)
        bound = tolerance / 2 * (1 + logits.abs().amax(dim=1, keepdim=True))
        return logits + bound * (2 * torch.rand(logits.shape, generator=noise_gen) - 1)

    monkeypatch.setattr(cache, method, perturbed)
    full_passes = []
    model.register_forward_hook(lambda *args: full_passes.append(1))
    generators = [torch.Generator().manual_seed(3) for _ in range(3)]

    def run(sampler, generator, **kwargs):
        return sampler(model, 8, labels, 0.9, top_k, generator, guidance=guidance, **kwargs)

    full = run(sample_full, generators[0])
    full_passes.clear()
    assert torch.equal(run(sample_cached, generators[1], tolerance=tolerance), full)
    assert len(full_passes) > 1, "expected corrections, each followed by a redraw and another check"
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))
    assert not torch.equal(run(sample_cached, generators[2], tolerance=0.0), full)


def test_guidance_is_refused_where_it_cannot_work():
    guided, plain, unconditional = guided_prior(), make_prior((3, 3), 3, num_classes=2), make_prior((3, 3), 3)
    labels = torch.tensor([0, 1])
    with pytest.raises(VQGenError, match="guidance must be >= 0, not -0.5"):
        sample_full(guided, 2, labels, guidance=-0.5)
    with pytest.raises(VQGenError, match="needs a prior trained with --label-dropout > 0"):
        sample_cached(plain, 2, labels, guidance=2.0)
    with pytest.raises(VQGenError, match="needs a class-conditional prior, but this one is unconditional"):
        sample_cached(unconditional, 2, guidance=0.5)
    check_guidance(plain, 1.0)  # S = 1 needs nothing
    check_guidance(unconditional, 1.0)
    assert sample_full(unconditional, 2, guidance=1.0).shape == (2, 3, 3)


@pytest.fixture
def tf32_on():
    """Both TF32 flags on (PyTorch's default for cuDNN) for the test, as they were afterwards."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    yield cudnn, matmul
    cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_samplers_run_without_tf32_and_restore_the_flags(tf32_on, monkeypatch):
    cudnn, matmul = tf32_on
    with exact_float32():
        assert cudnn.allow_tf32 is False and matmul.allow_tf32 is False
    assert cudnn.allow_tf32 is True and matmul.allow_tf32 is True
    with pytest.raises(RuntimeError), exact_float32():
        raise RuntimeError("restored on errors too")
    assert cudnn.allow_tf32 is True and matmul.allow_tf32 is True

    model = guided_prior((3, 3))
    seen = []
    flags = lambda *args: seen.append((cudnn.allow_tf32, matmul.allow_tf32))  # noqa: E731
    model.register_forward_hook(flags)
    exact_logits = CachedPixelCNN.logits
    monkeypatch.setattr(CachedPixelCNN, "logits", lambda self, j: flags() or exact_logits(self, j))
    labels = torch.tensor([0, 1])
    sample_full(model, 2, labels, guidance=2.0)
    sample_cached(model, 2, labels, guidance=2.0)
    cached_logits(model, torch.zeros(2, 3, 3, dtype=torch.long), labels)
    assert len(seen) >= 2 * 9 + 9 and set(seen) == {(False, False)}
    assert cudnn.allow_tf32 is True and matmul.allow_tf32 is True


def test_the_default_guidance_is_used_only_where_the_prior_can_be_guided():
    from types import SimpleNamespace

    from vqgen.config import GUIDED_SCALE
    from vqgen.sampling import choose_guidance

    guided = SimpleNamespace(conditional=True, null_label=10, cfg=SimpleNamespace())  # a file recording no scale
    recorded = SimpleNamespace(conditional=True, null_label=10, cfg=SimpleNamespace(guidance=4.5))
    plain = SimpleNamespace(conditional=True, null_label=None, cfg=SimpleNamespace(guidance=1.0))
    unconditional = SimpleNamespace(conditional=False, null_label=None, cfg=SimpleNamespace(guidance=1.0))
    assert choose_guidance(guided, None) == GUIDED_SCALE != 1
    assert choose_guidance(recorded, None) == 4.5 and choose_guidance(recorded, 2.0) == 2.0
    assert choose_guidance(plain, None) == choose_guidance(unconditional, None) == 1.0
    assert choose_guidance(guided, 1.0) == 1.0  # given: kept
    with pytest.raises(VQGenError, match="label-dropout"):
        choose_guidance(plain, 3.0)


def test_the_prior_records_a_guidance_and_its_temperature_chosen_by_image_kind_unless_given():
    from vqgen.config import (
        GUIDED_SCALE_COLOUR, GUIDED_SCALE_GREY, GUIDED_SCALE_GREY_MASKED, GUIDED_TEMPERATURE_COLOUR,
        GUIDED_TEMPERATURE_GREY, MaskedConfig, PixelCNNConfig,
    )

    conditional = PixelCNNConfig(num_classes=10).with_label_dropout_for(True)
    grey, colour = conditional.with_guidance_for(1), conditional.with_guidance_for(3)
    assert (grey.guidance, grey.guided_temperature) == (GUIDED_SCALE_GREY, GUIDED_TEMPERATURE_GREY)
    assert (colour.guidance, colour.guided_temperature) == (GUIDED_SCALE_COLOUR, GUIDED_TEMPERATURE_COLOUR)
    assert GUIDED_SCALE_COLOUR > GUIDED_SCALE_GREY and GUIDED_TEMPERATURE_COLOUR != GUIDED_TEMPERATURE_GREY
    masked = MaskedConfig(num_classes=10).with_label_dropout_for(True)
    assert masked.with_guidance_for(1).guidance == GUIDED_SCALE_GREY_MASKED != GUIDED_SCALE_GREY
    assert masked.with_guidance_for(3).guidance == GUIDED_SCALE_COLOUR
    given = replace(conditional, guidance=2.5, guided_temperature=0.7).with_guidance_for(3)
    assert (given.guidance, given.guided_temperature) == (2.5, 0.7)
    unguided = PixelCNNConfig(num_classes=10, label_dropout=0.0)
    assert unguided.with_guidance_for(3).guidance == 1.0
    with pytest.raises(VQGenError, match="sample-guidance"):
        replace(unguided, guidance=3.0).validate()
    with pytest.raises(VQGenError, match="--sample-temperature must be positive, not 0"):
        replace(conditional, guided_temperature=0.0).validate()


def test_train_prior_records_the_guidance_and_sample_uses_it(tiny_pipeline, tmp_path):
    from conftest import TINY_PRIOR, run_cli
    from vqgen.config import GUIDED_SCALE_GREY
    from vqgen.formats.files import read_metadata

    assert read_metadata(tiny_pipeline["prior"])["config"]["guidance"] == GUIDED_SCALE_GREY  # grey digits
    prior = tmp_path / "prior.safetensors"
    run_cli("train-prior", tiny_pipeline["codes"], "--out", prior, "--epochs", "1", "--device", "cpu",
            "--sample-guidance", "2.5", *TINY_PRIOR)
    assert read_metadata(prior)["config"]["guidance"] == 2.5
    run_cli("sample", prior, "--n", "2", "--out", tmp_path / "samples", "--device", "cpu")
    assert read_metadata(tmp_path / "samples" / "codes.safetensors")["guidance"] == 2.5


def test_train_prior_records_the_temperature_of_guided_sampling_and_sample_uses_it(tiny_pipeline, tmp_path):
    from conftest import TINY_PRIOR, run_cli
    from vqgen.config import GUIDED_TEMPERATURE_GREY
    from vqgen.formats.files import read_metadata

    assert read_metadata(tiny_pipeline["prior"])["config"]["guided_temperature"] == GUIDED_TEMPERATURE_GREY
    prior = tmp_path / "prior.safetensors"
    run_cli("train-prior", tiny_pipeline["codes"], "--out", prior, "--epochs", "1", "--device", "cpu",
            "--sample-temperature", "1.2", *TINY_PRIOR)
    assert read_metadata(prior)["config"]["guided_temperature"] == 1.2
    for name, flags, temperature in (("guided", (), 1.2), ("plain", ("--guidance", "1"), 1.0),
                                     ("told", ("--temperature", "0.8"), 0.8)):
        run_cli("sample", prior, "--n", "2", "--out", tmp_path / name, "--device", "cpu", *flags)
        assert read_metadata(tmp_path / name / "codes.safetensors")["temperature"] == temperature


def test_the_default_temperature_goes_with_guidance_and_sample_records_it(tmp_path):
    from types import SimpleNamespace

    from vqgen.config import GUIDED_SCALE, GUIDED_TEMPERATURE
    from vqgen.sampling import choose_temperature

    old_file = SimpleNamespace(cfg=SimpleNamespace())  # a prior written before the temperature was recorded
    recorded = SimpleNamespace(cfg=SimpleNamespace(guided_temperature=1.1))
    assert choose_temperature(old_file, None, GUIDED_SCALE) == GUIDED_TEMPERATURE != 1
    assert choose_temperature(recorded, None, 4.0) == 1.1
    assert choose_temperature(recorded, None, 1.0) == choose_temperature(old_file, None, 1.0) == 1.0
    assert choose_temperature(recorded, 0.7, 2.0) == 0.7
    from conftest import run_cli
    from vqgen.formats.files import read_metadata

    run_cli("sample", "mnist5k", "--n", "4", "--out", tmp_path / "guided", "--device", "cpu")
    run_cli("sample", "mnist5k", "--n", "4", "--guidance", "1", "--out", tmp_path / "plain", "--device", "cpu")
    guided, plain = (read_metadata(tmp_path / name / "codes.safetensors") for name in ("guided", "plain"))
    assert (guided["guidance"], guided["temperature"]) == (GUIDED_SCALE, GUIDED_TEMPERATURE)
    assert (plain["guidance"], plain["temperature"]) == (1.0, 1.0)


def test_raster_temperatures_give_the_finer_codes_of_residual_vq_their_own():
    stacks = PixelCNNConfig(latent_shape=(2, 6), code_depth=3)  # 2 positions a row, 3 codes each, side by side
    assert raster_temperatures(stacks, 1.1, 0.5) == [1.1, 0.5, 0.5] * 4
    assert raster_temperatures(stacks, 1.1, None) == [1.1] * 12
    assert raster_temperatures(PixelCNNConfig(latent_shape=(2, 2)), 0.9, None) == [0.9] * 4


def test_the_residual_temperature_is_recorded_for_residual_vq_codes_alone_and_a_given_one_wins():
    from types import SimpleNamespace

    from vqgen.config import RESIDUAL_TEMPERATURE

    def settled(**fields) -> PixelCNNConfig:
        return PixelCNNConfig(num_classes=10, **fields).with_label_dropout_for(True).with_guidance_for(3)

    stacks = settled(latent_shape=(2, 4), code_depth=2)
    assert stacks.residual_temperature == RESIDUAL_TEMPERATURE < stacks.guided_temperature
    assert settled().residual_temperature is None
    assert settled(latent_shape=(2, 4), code_depth=2, residual_temperature=0.4).residual_temperature == 0.4
    with pytest.raises(VQGenError, match="--sample-residual-temperature is for the codes of a residual VQ-VAE"):
        replace(settled(), residual_temperature=0.5).validate()
    with pytest.raises(VQGenError, match="--sample-residual-temperature must be positive, not 0"):
        replace(stacks, residual_temperature=0.0).validate()

    recorded = SimpleNamespace(cfg=replace(stacks, residual_temperature=0.4))
    assert choose_residual_temperature(recorded, None) == 0.4 and choose_residual_temperature(recorded, 0.9) == 0.9
    old_file = SimpleNamespace(cfg=replace(stacks, residual_temperature=None))
    assert choose_residual_temperature(old_file, None) == RESIDUAL_TEMPERATURE
    with pytest.raises(VQGenError, match="--residual-temperature must be positive, not 0"):
        choose_residual_temperature(recorded, 0.0)
    one_code = SimpleNamespace(cfg=settled())
    assert choose_residual_temperature(one_code, None) is None
    with pytest.raises(VQGenError, match="this one models one code per position"):
        choose_residual_temperature(one_code, 0.5)


@pytest.mark.parametrize("depth_heads", [True, False])
def test_the_finer_codes_of_residual_vq_are_drawn_at_their_own_temperature_by_both_samplers(depth_heads):
    from vqgen.models import build_prior

    torch.manual_seed(0)
    cfg = PixelCNNConfig(num_codes=K, latent_shape=(3, 6), code_depth=2, channels=32, num_layers=4, head_channels=32,
                         depth_heads=depth_heads)
    model = build_prior(cfg).eval()
    with torch.no_grad():
        for head in [model.head, *getattr(model, "depth_heads", [])]:
            head[3].weight.mul_(10.0)

    def draw(sampler, residual_temperature):
        return sampler(model, 8, temperature=1.0, generator=torch.Generator().manual_seed(5),
                       residual_temperature=residual_temperature)

    greedy_finer = draw(sample_full, 1e-4)
    assert torch.equal(draw(sample_cached, 1e-4), greedy_finer)
    with torch.no_grad():
        best = model(greedy_finer).argmax(dim=1)
    # at a near-zero temperature the finer codes (odd columns) are the most likely ones given all before them,
    # while the first code of each position is still drawn at temperature 1
    assert torch.equal(greedy_finer[:, :, 1::2], best[:, :, 1::2])
    assert not torch.equal(greedy_finer[:, :, 0::2], best[:, :, 0::2])
    plain = draw(sample_cached, None)
    with torch.no_grad():
        assert not torch.equal(plain[:, :, 1::2], model(plain).argmax(dim=1)[:, :, 1::2])
    assert torch.equal(draw(sample_full, None), plain)
