"""The transformer prior: causality, labels and label dropout, and its cached sampler against the full one."""

import dataclasses

import pytest
import torch

from vqgen.errors import VQGenError
from vqgen.models.transformer import TransformerConfig, TransformerPrior
from vqgen.sampling import sample_cached

K = 32


def make_prior(shape=(5, 6), num_classes: int = 0, logit_scale: float = 1.0, seed: int = 0, label_dropout: float = 0.0,
               layers: int = 3, dropout: float = 0.0) -> TransformerPrior:
    """A small random prior; ``logit_scale`` sharpens its output like training does. No dropout by default, so
    that the train-mode forward of the label-dropout test is deterministic."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(num_codes=K, latent_shape=shape, channels=32, num_layers=layers, num_heads=4,
                            num_classes=num_classes, label_dropout=label_dropout, dropout=dropout)
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
    model.cfg = dataclasses.replace(model.cfg, label_dropout=1.0)  # not a valid setting; forces every draw
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

# cached logits and codes against the full pass's (with temperature, top-k, guidance), the full pass causal in
# floating point and the near-tie check with a perturbed key/value cache: tests/test_sampling.py, beside the PixelCNN


def test_the_cache_runs_one_position_per_step():
    model = make_prior((3, 4))
    seen = []
    model.blocks[0].attention.qkv.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    sample_cached(model, 2, generator=torch.Generator().manual_seed(0), tolerance=0.0)
    assert seen == [1] * 12  # one query position per step, nothing recomputed
