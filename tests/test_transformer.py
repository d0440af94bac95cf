"""The transformer prior: causality, labels and label dropout, and its cached sampler against the full one."""

import pytest
import torch

from vqgen.errors import VQGenError
from vqgen.models.transformer import TransformerConfig, TransformerPrior
from vqgen.sampling import TIE_TOLERANCE, CachedTransformer, cached_logits, sample_cached, sample_full

K = 32


def make_prior(shape=(5, 6), num_classes: int = 0, logit_scale: float = 1.0, seed: int = 0, label_dropout: float = 0.0,
               layers: int = 3) -> TransformerPrior:
    """A small random prior; ``logit_scale`` sharpens its output like training does."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(num_codes=K, latent_shape=shape, channels=32, num_layers=layers, num_heads=4,
                            num_classes=num_classes, label_dropout=label_dropout)
    model = TransformerPrior(cfg).eval()
    with torch.no_grad():
        model.head.weight.mul_(20 * logit_scale)  # the 0.02 initialisation gives nearly uniform logits
    return model


def labels_for(model: TransformerPrior, n: int):
    return torch.arange(n) % model.cfg.num_classes if model.conditional else None


# ----------------------------------------------------------------------------- the model


def code_gradient(model: TransformerPrior, codes, labels, t: int) -> torch.Tensor:
    """|d logits at raster position t / d embedding of each code| summed over channels -> (H * W,)."""
    captured = []
    handle = model.code_embedding.register_forward_hook(lambda m, inp, out: captured.append(out) or out.retain_grad())
    logits = model(codes, labels).flatten(2)
    handle.remove()
    logits[:, :, t].sum().backward()
    grad = captured[0].grad.abs().sum(dim=(0, 2))  # codes 0 .. T-2 are embedded; the last one feeds nothing
    return torch.cat([grad, torch.zeros(1)])


@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("shape", [(4, 5), (3, 1)])
def test_logits_depend_exactly_on_the_codes_before_them(num_classes, shape):
    model = make_prior(shape, num_classes)
    h, w = shape
    codes = torch.randint(0, K, (2, h, w))
    labels = labels_for(model, 2)
    for t in range(h * w):
        grad = code_gradient(model, codes, labels, t)
        assert torch.count_nonzero(grad[t:]) == 0, f"position {t} sees itself or the future"
        assert (grad[:t] > 0).all(), f"position {t} misses part of its past"


def test_changing_a_code_leaves_earlier_logits_untouched_and_labels_reach_every_position():
    model = make_prior((4, 4), num_classes=3)
    codes, labels = torch.randint(0, K, (3, 4, 4)), torch.tensor([0, 1, 2])
    with torch.no_grad():
        base = model(codes, labels).flatten(2)
        for p in range(16):
            changed = codes.clone()
            changed.view(3, -1)[:, p] = (changed.view(3, -1)[:, p] + 1) % K
            diff = (model(changed, labels).flatten(2) - base).abs().amax(dim=(0, 1))
            assert torch.all(diff[: p + 1] == 0)
            if p + 1 < 16:
                assert diff[p + 1] > 0
        other = (model(codes, torch.tensor([1, 2, 0])).flatten(2) - base).abs().amax(dim=(0, 1))
    assert (other > 0).all()  # the class token is seen from position 0 on
    with pytest.raises(VQGenError, match="labels are required"):
        model(codes)


def test_a_few_training_steps_lower_the_nll_and_every_parameter_learns():
    torch.manual_seed(0)
    model = make_prior((4, 4), num_classes=2, logit_scale=0.05, label_dropout=0.2).train()
    labels = torch.randint(0, 2, (64,))
    codes = (labels * 3 + 1)[:, None, None].expand(64, 4, 4).clone()  # one constant code per label
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.nll(codes, labels).item()
    for step in range(30):
        loss = model.nll(codes, labels)
        opt.zero_grad()
        loss.backward()
        if step == 0:  # DDP requires it; a parameter without a gradient is dead weight in the checkpoint too
            assert [n for n, p in model.named_parameters() if p.grad is None] == []
        opt.step()
    assert model.nll(codes, labels).item() < 0.5 * first


def test_label_dropout_gives_the_start_token_a_null_row():
    with_null, without, unconditional = make_prior(num_classes=4, label_dropout=0.1), make_prior(num_classes=4), make_prior()
    assert with_null.start.num_embeddings == 5 and with_null.null_label == 4
    assert without.start.num_embeddings == 4 and without.null_label is None
    assert unconditional.start.num_embeddings == 1
    model = with_null.train()
    model.cfg.label_dropout = 1.0  # not a valid setting; forces every draw
    codes, labels = torch.randint(0, K, (4, 5, 6)), torch.tensor([0, 1, 2, 3])
    trained_view = model(codes, labels)
    with torch.no_grad():
        null_view = model.eval()(codes, model.null_labels(4))
    assert torch.equal(trained_view.detach(), null_view)
    trained_view.sum().backward()
    grad = model.start.weight.grad
    assert grad[4].abs().sum() > 0 and torch.count_nonzero(grad[:4]) == 0


def test_config_is_validated():
    for kwargs, message in [
        (dict(channels=30, num_heads=4), "--heads must divide --channels 30"),
        (dict(num_layers=0), "--layers and --channels must be positive"),
        (dict(dropout=1.0), r"--dropout must be in \[0, 1\)"),
        (dict(label_dropout=0.2), "--label-dropout needs a class-conditional prior"),
    ]:
        with pytest.raises(VQGenError, match=message):
            TransformerPrior(TransformerConfig(**kwargs))


# ----------------------------------------------------------------------------- cached against full sampling

# (latent shape, classes): square, non-square, one column, one position
LOGIT_CASES = [((4, 4), 0), ((7, 7), 3), ((5, 9), 0), ((3, 1), 2), ((1, 1), 0)]


@pytest.mark.parametrize("shape,num_classes", LOGIT_CASES)
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_cached_logits_equal_the_full_pass_at_every_position(shape, num_classes, logit_scale):
    model = make_prior(shape, num_classes, logit_scale)
    codes = torch.randint(0, K, (6, *shape))
    labels = labels_for(model, 6)
    with torch.no_grad():
        full = model(codes, labels)
    cached = cached_logits(model, codes, labels)
    error = (cached - full).abs()
    scale = 1 + full.abs().amax(dim=1, keepdim=True)
    # the bound sample_cached's near-tie check assumes, with a 10x margin
    assert (error <= TIE_TOLERANCE / 10 * scale).all(), f"max error {error.max().item():.3g}"


@pytest.mark.parametrize("shape,num_classes", [((5, 6), 0), ((4, 7), 3)])
def test_full_pass_is_causal_in_floating_point(shape, num_classes):
    """What the near-tie check relies on: the logits at t of a full pass over the finished map are
    bit for bit those of a pass over the map with zeros from t on (as sample_full has it)."""
    model = make_prior(shape, num_classes, logit_scale=10.0)
    codes = torch.randint(0, K, (6, *shape))
    labels = labels_for(model, 6)
    h, w = shape
    with torch.no_grad():
        finished = model(codes, labels).flatten(2)
        for t in range(h * w):
            partial = codes.clone().view(6, -1)
            partial[:, t:] = 0
            assert torch.equal(model(partial.view(6, h, w), labels).flatten(2)[:, :, t], finished[:, :, t]), t


# (latent shape, classes, temperature, top-k, guidance)
SAMPLE_CASES = [
    ((4, 4), 0, 1.0, None, 1.0),
    ((7, 7), 3, 0.8, 5, 1.0),
    ((5, 9), 0, 1.3, 10, 1.0),
    ((6, 4), 2, 0.5, 1, 1.0),
    ((5, 6), 3, 1.0, None, 2.0),
    ((4, 7), 3, 0.8, 5, 1.5),
    ((6, 4), 3, 1.3, 10, 0.0),
]


@pytest.mark.parametrize("shape,num_classes,temperature,top_k,guidance", SAMPLE_CASES)
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_cached_sampler_draws_exactly_the_codes_of_the_full_sampler(
    shape, num_classes, temperature, top_k, guidance, logit_scale
):
    model = make_prior(shape, num_classes, logit_scale, label_dropout=0.2 if guidance != 1 else 0.0)
    if guidance != 1:
        with torch.no_grad():
            model.start.weight.mul_(50.0)  # a null row clearly apart from the classes'
    labels = labels_for(model, 8)
    generators = [torch.Generator().manual_seed(123) for _ in range(3)]
    full = sample_full(model, 8, labels, temperature, top_k, generators[0], guidance=guidance)
    cached = sample_cached(model, 8, labels, temperature, top_k, generators[1], guidance=guidance)
    assert cached.shape == (8, *shape) and cached.dtype == torch.long
    assert torch.equal(cached, full)
    if top_k != 1:
        assert full.unique().numel() > 1, "degenerate case: every code the same"
    # both consumed the same random numbers, in the same amount
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))
    if guidance != 1:
        plain = sample_full(model, 8, labels, temperature, top_k, generators[2])
        assert not torch.equal(full, plain), "guidance changed nothing"


def test_near_tie_check_keeps_codes_exact_when_cached_logits_are_off(monkeypatch):
    """Perturb the cached logits by up to half the tolerance: the check must catch and correct every
    draw the perturbation flips (redrawing the rest from the same random numbers, the key/value cache
    refilled up to there), so the codes still equal the full sampler's; without the check they do not."""
    model = make_prior((6, 6), num_classes=3, logit_scale=0.5, label_dropout=0.2)
    labels = labels_for(model, 8)
    tolerance = 0.01
    noise_gen = torch.Generator().manual_seed(7)
    exact_logits = CachedTransformer.step_logits

    def perturbed(self):
        logits = exact_logits(self)
        bound = tolerance / 2 * (1 + logits.abs().amax(dim=1, keepdim=True))
        return logits + bound * (2 * torch.rand(logits.shape, generator=noise_gen) - 1)

    monkeypatch.setattr(CachedTransformer, "step_logits", perturbed)
    full_passes = []
    model.register_forward_hook(lambda *args: full_passes.append(1))
    generators = [torch.Generator().manual_seed(3) for _ in range(3)]

    def run(sampler, generator, **kwargs):
        return sampler(model, 8, labels, 0.9, None, generator, guidance=2.0, **kwargs)

    full = run(sample_full, generators[0])
    full_passes.clear()
    assert torch.equal(run(sample_cached, generators[1], tolerance=tolerance), full)
    assert len(full_passes) > 1, "expected corrections, each followed by a redraw and another check"
    assert torch.equal(torch.rand(4, generator=generators[0]), torch.rand(4, generator=generators[1]))
    assert not torch.equal(run(sample_cached, generators[2], tolerance=0.0), full)


def test_the_cache_runs_one_position_per_step():
    model = make_prior((3, 4))
    seen = []
    model.blocks[0].attention.qkv.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    sample_cached(model, 2, generator=torch.Generator().manual_seed(0), tolerance=0.0)
    assert seen == [1] * 12  # one query position per step, nothing recomputed
