import dataclasses

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vqgen.cli import app
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.prior import code_nll


def tiny_prior(kernel_size: int, num_classes: int = 0, shape=(5, 6), layers: int = 6,
               attention_heads: int = 0) -> GatedPixelCNN:
    torch.manual_seed(kernel_size + num_classes)
    cfg = PixelCNNConfig(
        num_codes=7, latent_shape=shape, channels=8, num_layers=layers, kernel_size=kernel_size,
        num_classes=num_classes, head_channels=16, attention_heads=attention_heads,
    )
    model = GatedPixelCNN(cfg).eval()
    if model.attention is not None:  # past its zero start, so that the block changes the logits
        torch.nn.init.normal_(model.attention.attention.out.weight, std=0.5)
    return model


def input_gradient(model: GatedPixelCNN, codes, labels, i: int, j: int) -> torch.Tensor:
    """|d logits[:, :, i, j] / d embedded input| summed over channels -> (H, W)."""
    captured = []
    handle = model.embedding.register_forward_hook(lambda m, inp, out: captured.append(out) or out.retain_grad())
    logits = model(codes, labels)
    handle.remove()
    logits[:, :, i, j].sum().backward()
    return captured[0].grad.abs().sum(dim=(0, 3))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("num_classes", [0, 4])
@pytest.mark.parametrize("attention_heads", [0, 2])
def test_logits_depend_exactly_on_the_codes_before_them(kernel_size, num_classes, attention_heads):
    model = tiny_prior(kernel_size, num_classes, attention_heads=attention_heads)
    h, w = model.cfg.latent_shape
    codes = torch.randint(0, 7, (2, h, w))
    labels = torch.tensor([1, 3]) if num_classes else None
    for i in range(h):
        for j in range(w):
            grad = input_gradient(model, codes, labels, i, j)
            before = torch.zeros(h, w, dtype=torch.bool)
            before.view(-1)[: i * w + j] = True
            assert torch.count_nonzero(grad[~before]) == 0, f"position {(i, j)} sees itself or the future"
            # no blind spot: every earlier position influences the logits (deep enough stack)
            assert (grad[before] > 0).all(), f"position {(i, j)} misses part of its past"


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("attention_heads", [0, 4])
def test_changing_a_code_leaves_earlier_logits_untouched(kernel_size, attention_heads):
    model = tiny_prior(kernel_size, num_classes=3, attention_heads=attention_heads)
    h, w = model.cfg.latent_shape
    codes = torch.randint(0, 7, (3, h, w))
    labels = torch.tensor([0, 1, 2])
    base = model(codes, labels)
    for p in range(h * w):
        changed = codes.clone()
        changed.view(3, -1)[:, p] = (changed.view(3, -1)[:, p] + 1) % 7
        diff = (model(changed, labels) - base).abs().amax(dim=(0, 1)).flatten()
        assert torch.all(diff[: p + 1] == 0)
        if p + 1 < h * w:
            assert diff[p + 1] > 0


def test_labels_change_the_logits_of_a_conditional_prior():
    model = tiny_prior(3, num_classes=4)
    codes = torch.randint(0, 7, (1, 5, 6))
    a, b = model(codes, torch.tensor([0])), model(codes, torch.tensor([2]))
    assert not torch.allclose(a, b)


def test_conditional_prior_requires_labels():
    from vqgen.errors import VQGenError

    model = tiny_prior(3, num_classes=4)
    with pytest.raises(VQGenError):
        model(torch.zeros(1, 5, 6, dtype=torch.long))


def test_a_few_training_steps_lower_the_nll():
    torch.manual_seed(0)
    model = tiny_prior(3, num_classes=2, shape=(4, 4), layers=4).train()
    # structured data: each map is one constant code chosen by its label
    labels = torch.randint(0, 2, (64,))
    codes = (labels * 3 + 1)[:, None, None].expand(64, 4, 4).clone()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.nll(codes, labels).item()
    for _ in range(30):
        loss = model.nll(codes, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.nll(codes, labels).item() < 0.5 * first


def test_nll_is_cross_entropy_in_nats():
    model = tiny_prior(3)
    codes = torch.randint(0, 7, (2, 5, 6))
    assert torch.allclose(model.nll(codes), F.cross_entropy(model(codes), codes))


def test_code_nll_is_cross_entropy_for_either_layout_of_the_logits():
    torch.manual_seed(0)
    logits, codes = torch.randn(3, 7, 4, 5), torch.randint(0, 7, (3, 4, 5))
    for reduction in ("mean", "sum"):
        expected = F.cross_entropy(logits, codes, reduction=reduction)
        for layout in (torch.contiguous_format, torch.channels_last):
            assert torch.allclose(code_nll(logits.contiguous(memory_format=layout), codes, reduction), expected)
        assert torch.allclose(code_nll(logits.bfloat16(), codes, reduction), expected, rtol=0.02)


def test_every_parameter_takes_part_in_the_loss():
    # DDP requires it; a parameter without a gradient is dead weight in the checkpoint too
    model = tiny_prior(3, num_classes=2).train()
    model.nll(torch.randint(0, 7, (2, 5, 6)), torch.tensor([0, 1])).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


# ----------------------------------------------------------------------------- label dropout (guidance)


def dropout_prior(label_dropout: float, num_classes: int = 4, seed: int = 0) -> GatedPixelCNN:
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(
        num_codes=7, latent_shape=(4, 5), channels=8, num_layers=3, num_classes=num_classes, head_channels=16,
        label_dropout=label_dropout, dropout=0.0,  # feature dropout off: train and eval views compare
    )
    return GatedPixelCNN(cfg)


def test_label_dropout_adds_one_null_row_and_is_validated():
    from vqgen.errors import VQGenError

    with_null, without = dropout_prior(0.1), dropout_prior(0.0)
    assert with_null.layers[0].cond.num_embeddings == 5 and with_null.null_label == 4
    assert without.layers[0].cond.num_embeddings == 4 and without.null_label is None
    assert with_null.null_labels(3).tolist() == [4, 4, 4]
    with pytest.raises(VQGenError, match="trained without --label-dropout"):
        without.null_labels(3)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(VQGenError, match=r"--label-dropout must be in \[0, 1\)"):
            dropout_prior(p)
    with pytest.raises(VQGenError, match="--label-dropout needs a class-conditional prior"):
        dropout_prior(0.2, num_classes=0)


def test_label_dropout_replaces_that_share_of_labels_in_training_only():
    model = dropout_prior(0.3).train()
    labels = torch.randint(0, 4, (4000,))
    torch.manual_seed(5)
    dropped = model.drop_labels(labels)
    kept = dropped != 4
    assert 0.27 < 1 - kept.float().mean().item() < 0.33
    assert torch.equal(dropped[kept], labels[kept])
    torch.manual_seed(5)  # drawn from torch's global RNG: seeded runs repeat
    assert torch.equal(model.drop_labels(labels), dropped)
    assert torch.equal(model.eval().drop_labels(labels), labels)


def test_with_every_label_dropped_training_sees_only_the_null_row():
    model = dropout_prior(0.5).train()
    model.cfg = dataclasses.replace(model.cfg, label_dropout=1.0)  # not a valid setting; forces every draw
    codes, labels = torch.randint(0, 7, (6, 4, 5)), torch.tensor([0, 1, 2, 3, 0, 1])
    assert (model.drop_labels(labels) == 4).all()
    trained_view = model(codes, labels)
    with torch.no_grad():
        null_view = model.eval()(codes, model.null_labels(6))
    assert torch.equal(trained_view.detach(), null_view)
    # the gradient reaches the null row of the class bias only
    trained_view.sum().backward()
    grad = model.layers[0].cond.weight.grad
    assert grad[4].abs().sum() > 0 and torch.count_nonzero(grad[:4]) == 0


def test_without_label_dropout_the_model_is_unchanged():
    """p == 0: no extra row, no random numbers drawn, training-mode output bit for bit the
    eval-mode one, and old checkpoints' configs (no label_dropout) build the same model."""
    model = dropout_prior(0.0).train()
    codes, labels = torch.randint(0, 7, (6, 4, 5)), torch.tensor([0, 1, 2, 3, 0, 1])
    state = torch.get_rng_state()
    trained_view = model(codes, labels)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        assert torch.equal(trained_view.detach(), model.eval()(codes, labels))
    old_config = {k: v for k, v in model.cfg.to_dict().items() if k != "label_dropout"}
    torch.manual_seed(0)
    old = GatedPixelCNN(PixelCNNConfig.from_dict(old_config))
    assert old.cfg.label_dropout == 0.0
    assert model.state_dict().keys() == old.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, old.state_dict()[name]), name


def test_the_attention_block_starts_as_the_identity_and_needs_heads_that_divide_the_channels():
    from vqgen.errors import VQGenError

    torch.manual_seed(0)
    cfg = dict(num_codes=7, latent_shape=(4, 5), channels=8, num_layers=3, head_channels=16)
    plain = GatedPixelCNN(PixelCNNConfig(**cfg)).eval()
    torch.manual_seed(0)
    with_attention = GatedPixelCNN(PixelCNNConfig(**cfg, attention_heads=2)).eval()
    codes = torch.randint(0, 7, (2, 4, 5))
    assert torch.equal(with_attention(codes), plain(codes))  # same weights, zero output projection
    for heads in (3, -1):
        with pytest.raises(VQGenError, match="--attention-heads"):
            PixelCNNConfig(**cfg, attention_heads=heads).validate()


def test_a_prior_with_attention_trains_saves_and_loads_with_its_block(tmp_path, code_file):
    from vqgen.formats.checkpoints import load_prior
    from vqgen.config import PriorTrainOptions
    from vqgen.formats.codes import load_codes
    from vqgen.train.prior import train_prior

    codes = load_codes(code_file)
    cfg = PixelCNNConfig(num_codes=16, latent_shape=(4, 4), channels=8, num_layers=2, head_channels=8,
                         attention_heads=2)
    out = tmp_path / "prior.safetensors"
    train_prior(codes, cfg, PriorTrainOptions(epochs=1, batch_size=8, lr=1e-2, device="cpu"), out)
    model, meta = load_prior(out, "cpu")
    assert meta["config"]["attention_heads"] == 2 and model.attention is not None
    assert model.attention.attention.out.weight.abs().sum() > 0  # trained past its zero start


def test_a_head_without_channels_is_refused_in_one_line(tmp_path, code_file):
    from vqgen.errors import VQGenError

    for width in (0, -4):
        with pytest.raises(VQGenError, match="--head-channels must be positive"):
            PixelCNNConfig(num_codes=7, latent_shape=(4, 5), head_channels=width).validate()
    out = tmp_path / "prior.safetensors"
    result = CliRunner().invoke(app, ["train-prior", str(code_file), "--head-channels", "0", "--out", str(out)])
    assert result.exit_code != 0 and "--head-channels must be positive" in result.output
    assert not list(tmp_path.glob("prior*"))
