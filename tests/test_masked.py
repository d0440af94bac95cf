"""The masked prior (MaskGIT): its mask schedules, parallel decoding, training, sampling, evaluate and `vqgen edit`."""

import json
import math

import pytest
import torch

import vqgen
from tests.conftest import run_cli
from vqgen.config import MaskedConfig
from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.models import MaskedConvPrior, MaskedTransformerPrior, build_prior
from vqgen.models.masked import cosine_mask_ratio, fixed_ratio_mask, training_mask
from vqgen.sampling import Guidance, sample_masked
from vqgen.sampling.masked import decode_step, hidden_counts
from vqgen.tools.edit import box_cells

K = 16
TINY_MASKED = ["--arch", "masked", "--layers", "1", "--channels", "16", "--heads", "2"]


@pytest.fixture(params=["transformer", "conv"])
def backbone(request) -> str:
    return request.param


def make_prior(shape=(4, 5), num_classes: int = 3, label_dropout: float = 0.2, seed: int = 0,
               backbone: str = "transformer") -> torch.nn.Module:
    """A small random masked prior, its head sharpened as training would (the 0.02 initialisation is near uniform;
    the conv backbone's residual branches start at zero, so they get random weights too)."""
    torch.manual_seed(seed)
    cfg = MaskedConfig(num_codes=K, latent_shape=shape, channels=32, num_layers=2, num_heads=4,
                       num_classes=num_classes, label_dropout=label_dropout, dropout=0.0, backbone=backbone)
    model = build_prior(cfg).eval()
    assert isinstance(model, MaskedConvPrior if backbone == "conv" else MaskedTransformerPrior)
    with torch.no_grad():
        model.head.weight.mul_(20)
        for block in model.blocks if backbone == "conv" else []:
            torch.nn.init.normal_(block.conv2.weight, std=0.1)
    return model


def draw(model, n=6, seed=0, labels=None, **options):
    labels = torch.arange(n) % model.cfg.num_classes if labels is None and model.conditional else labels
    return sample_masked(model, n, labels=labels, generator=torch.Generator().manual_seed(seed), **options)


# ----------------------------------------------------------------------------- schedules


def test_the_cosine_ratio_and_the_training_masks_follow_it():
    assert cosine_mask_ratio(0.0) == 1 and cosine_mask_ratio(1.0) < 1e-15
    assert torch.all(cosine_mask_ratio(torch.linspace(0, 1, 11)).diff() < 0)
    hidden = training_mask(500, 49, generator=torch.Generator().manual_seed(3))
    progress = torch.rand(500, generator=torch.Generator().manual_seed(3))  # the same first draws
    expected = torch.ceil(torch.cos(math.pi / 2 * progress.double()) * 49).long().clamp(1, 49)
    assert torch.equal(hidden.sum(1), expected)
    # many maps mostly hidden, few nearly whole: the cosine schedule's mean ratio is 2 / pi
    assert hidden.float().mean().item() == pytest.approx(2 / math.pi, abs=0.05)
    fixed = fixed_ratio_mask(8, 49, 0.5, torch.Generator().manual_seed(0))
    assert (fixed.sum(1) == 24).all() and torch.equal(fixed, fixed_ratio_mask(8, 49, 0.5, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("unknown, steps, expected", [
    (49, 8, [48, 45, 40, 34, 27, 18, 9, 0]),  # floor(49 cos(pi/2 (s+1)/8))
    (20, 4, [18, 14, 7, 0]),
    (3, 8, [2, 1, 0, 0, 0, 0, 0, 0]),  # at least one code per step while any are left
    (49, 1, [0]),
    (0, 4, [0, 0, 0, 0]),
])
def test_hidden_counts_follow_the_cosine_schedule(unknown, steps, expected):
    assert hidden_counts(unknown, steps) == expected


# ----------------------------------------------------------------------------- the model


def test_every_logit_sees_every_code_and_the_label(backbone):
    model = make_prior((3, 4), backbone=backbone)
    codes = torch.randint(0, K, (2, 3, 4))
    codes[0, 1, 1] = model.mask_code
    captured = []
    handle = model.code_embedding.register_forward_hook(lambda m, inp, out: captured.append(out) or out.retain_grad())
    logits = model(codes, torch.tensor([0, 1]))
    handle.remove()
    assert logits.shape == (2, K, 3, 4)  # K logits: the [MASK] code is an input only
    logits[:, :, 0, 0].sum().backward()
    assert (captured[0].grad.abs().sum(dim=2) > 0).all()  # position (0, 0) depends on all 12 codes
    other_label = model(codes, torch.tensor([2, 2]))
    assert not torch.allclose(logits[1:], other_label[1:])


def test_nll_is_of_hidden_codes_and_falls_with_training(backbone):
    model = make_prior((4, 4), num_classes=0, label_dropout=0.0, backbone=backbone)
    model.train()
    codes = torch.randint(0, K, (1, 4, 4)).repeat(8, 1, 1)
    first = model.nll(codes).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        model.nll(codes).backward()
        optimizer.step()
    assert model.nll(codes).item() < 0.3 * first


# ----------------------------------------------------------------------------- parallel decoding


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_each_step_keeps_the_known_codes_and_fixes_as_many_as_the_schedule_says(steps, backbone):
    model = make_prior((4, 5), backbone=backbone)
    n, total = 6, 20
    labels = torch.arange(n) % 3
    given = torch.randint(0, K, (n, 4, 5))
    hidden = torch.zeros(n, 4, 5, dtype=torch.bool)
    hidden[:, 1:3, 1:4] = True  # six codes to redraw, as edit hides them
    hidden[0] = True  # and one whole map
    x = given.masked_fill(hidden, model.mask_code)
    generator = torch.Generator().manual_seed(5)
    guide = Guidance(1.0, labels, None)
    schedule = torch.tensor([hidden_counts(int(u), steps) for u in hidden.view(n, -1).sum(1)])
    for step in range(steps):
        before = x.clone()
        annealed = 4.5 * (1 - (step + 1) / steps)
        with torch.no_grad():
            x = decode_step(model, x, guide, schedule[:, step], 1.0, None, annealed, generator)
        known = before != model.mask_code
        assert torch.equal(x[known], before[known])
        assert torch.equal((x == model.mask_code).view(n, total).sum(1), schedule[:, step])
    assert not (x == model.mask_code).any() and torch.equal(x[~hidden], given[~hidden])
    # sample_masked is this loop (same random numbers in the same order)
    again = sample_masked(model, n, labels, generator=torch.Generator().manual_seed(5), steps=steps,
                          codes=given, hidden=hidden)
    assert torch.equal(again, x)


def test_sampling_is_seeded_and_respects_top_k(backbone):
    model = make_prior(backbone=backbone)
    a, b = draw(model, seed=1), draw(model, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, draw(model, seed=2))
    assert a.min() >= 0 and a.max() < K
    top1 = draw(model, seed=1, top_k=1, choice_temperature=0.0)
    assert torch.equal(top1, draw(model, seed=9, top_k=1, choice_temperature=0.0))  # nothing random is left


def test_guidance_one_is_plain_conditional_sampling_and_zero_is_the_no_class_mode(backbone):
    model = make_prior(backbone=backbone)
    labels = torch.tensor([0, 1, 2, 0])
    plain = draw(model, 4, labels=labels)
    assert torch.equal(draw(model, 4, labels=labels, guidance=1.0), plain)
    unconditional = draw(model, 4, labels=model.null_labels(4))
    assert torch.equal(draw(model, 4, labels=labels, guidance=0.0), unconditional)
    assert not torch.equal(draw(model, 4, labels=labels, guidance=3.0), plain)


def test_box_cells_are_the_cells_the_box_touches():
    cells = box_cells((5, 8, 12, 20), (28, 28), 4)  # x 5..11 -> columns 1..2, y 8..19 -> rows 2..4
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[2:5, 1:3] = True
    assert torch.equal(cells, expected)
    assert box_cells((0, 0, 28, 28), (28, 28), 4).all()


# ----------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def masked_prior(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("masked") / "prior.safetensors"
    run_cli("train-prior", tiny_pipeline["codes"], "--out", out, "--epochs", "1", "--label-dropout", "0.3",
            "--device", "cpu", *TINY_MASKED)
    return out


def test_train_prior_reports_hidden_code_nll_not_bits(masked_prior, tiny_pipeline, tmp_path):
    model, meta = vqgen.load_prior(masked_prior), load_vqgen_file(masked_prior)[1]
    assert isinstance(model, MaskedConvPrior) and meta["config"]["arch"] == "masked"  # conv: the default backbone
    metrics = meta["metrics"]
    assert not any("bits" in key for key in metrics)
    assert metrics["val_mask_ratio"] == 0.5 and 0 < metrics["val_masked_nll_nats"] < math.log(32)
    run_cli("evaluate", "--codes", tiny_pipeline["codes"], "--prior", masked_prior, "--json", tmp_path / "e.json",
            "--device", "cpu")
    prior = json.loads((tmp_path / "e.json").read_text())["prior"]
    assert "bits_per_code" not in prior and prior["mask_ratio"] == 0.5
    assert prior["masked_nll_nats_per_code"] == pytest.approx(metrics["val_masked_nll_nats"], rel=1e-5)
    shown = run_cli("evaluate", "--codes", tiny_pipeline["codes"], "--prior", masked_prior, "--device", "cpu").output
    assert "hidden-code NLL" in shown and "not defined" in shown


def test_the_transformer_backbone_trains_saves_and_samples_and_older_files_read_as_it(tiny_pipeline, tmp_path):
    out = tmp_path / "transformer.safetensors"
    run_cli("train-prior", tiny_pipeline["codes"], "--out", out, "--epochs", "1", "--device", "cpu", "--arch", "masked",
            "--backbone", "transformer", "--layers", "1", "--channels", "16", "--heads", "2", "--seed", "3")
    model, meta = vqgen.load_prior(out), load_vqgen_file(out)[1]
    assert isinstance(model, MaskedTransformerPrior) and meta["config"]["backbone"] == "transformer"
    assert 0 < meta["metrics"]["val_masked_nll_nats"] < math.log(32)
    run_cli("sample", out, "--n", "4", "--steps", "3", "--seed", "1", "--out", tmp_path / "s", "--device", "cpu")
    codes = load_vqgen_file(tmp_path / "s" / "codes.safetensors")[0]["codes"]
    assert codes.shape == (4, 7, 7) and int(codes.max()) < 32
    # a masked prior written before there was a choice of backbone is a transformer
    tensors, meta = load_vqgen_file(out)
    del meta["config"]["backbone"]
    save_vqgen_file(tmp_path / "older.safetensors", tensors, meta)
    older = vqgen.load_prior(tmp_path / "older.safetensors")
    assert isinstance(older, MaskedTransformerPrior) and older.cfg.backbone == "transformer"


@pytest.mark.parametrize("args, message", [
    (["--arch", "masked", "--backbone", "lstm"], "--backbone must be one of transformer, conv, not 'lstm'"),
    (["--backbone", "conv"], "--backbone is an option of --arch masked, not of --arch pixelcnn"),
])
def test_a_wrong_backbone_is_refused_in_one_line(tiny_pipeline, tmp_path, args, message):
    result = run_cli("train-prior", tiny_pipeline["codes"], "--out", tmp_path / "p.safetensors", *args, ok=False)
    assert result.exit_code == 1 and message in result.output
    assert list(tmp_path.iterdir()) == []


def test_sample_cli_and_api_agree_and_record_the_steps(masked_prior, tmp_path):
    run_cli("sample", masked_prior, "--n", "5", "--label", "3,8", "--seed", "2", "--steps", "4",
            "--out", tmp_path / "s", "--device", "cpu")
    tensors, record = load_vqgen_file(tmp_path / "s" / "codes.safetensors", "samples")
    assert record["sampler"] == "masked" and record["steps"] == 4 and record["choice_temperature"] == 4.5
    prior = vqgen.load_prior(masked_prior)
    api = vqgen.sample_codes(prior, 5, labels=["3", "8", "3", "8", "3"], seed=2, steps=4)
    assert torch.equal(tensors["codes"].long(), api)


def test_raster_options_and_masked_options_are_kept_apart(masked_prior, tiny_pipeline, tmp_path):
    full = run_cli("sample", masked_prior, "--sampler", "full", "--out", tmp_path / "a", ok=False)
    assert full.exit_code == 1 and "--sampler full is for raster-order priors" in full.output
    steps = run_cli("sample", tiny_pipeline["prior"], "--steps", "4", "--out", tmp_path / "b", ok=False)
    assert steps.exit_code == 1 and "--steps is an option of masked priors" in steps.output
    two = run_cli("sample", masked_prior, "--steps", "0", "--out", tmp_path / "c", ok=False)
    assert two.exit_code == 1 and "--steps must be at least 1" in two.output
    assert list(tmp_path.iterdir()) == []


def test_edit_redraws_the_box_and_leaves_every_other_code_bit_for_bit(masked_prior, tmp_path):
    out = tmp_path / "edits"
    result = run_cli("edit", "mnist5k:4", "--box", "5,8,12,20", "--prior", masked_prior, "--n", "3", "--label", "2",
                     "--seed", "1", "--out", out, "--device", "cpu")
    assert "6 codes redrawn" in result.output
    tensors, record = load_vqgen_file(out / "codes.safetensors", "samples")
    hidden = tensors["hidden"][0].bool()
    assert torch.equal(hidden, box_cells((5, 8, 12, 20), (28, 28), 4)) and record["box"] == [5, 8, 12, 20]
    edited, original = tensors["codes"], tensors["original_codes"]
    assert edited.shape == (3, 7, 7)
    assert torch.equal(edited[:, ~hidden], original[:, ~hidden].expand(3, -1))
    assert (edited[:, hidden] != original[:, hidden]).any()  # something was redrawn
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "codes.safetensors", "grid.png", "original.png"]
    again = tmp_path / "again"
    run_cli("edit", "mnist5k:4", "--box", "5,8,12,20", "--prior", masked_prior, "--n", "3", "--label", "2",
            "--seed", "1", "--out", again, "--device", "cpu")
    assert torch.equal(load_vqgen_file(again / "codes.safetensors")[0]["codes"], edited)


def test_the_training_curves_draw_the_hidden_code_nll():
    from vqgen.tools.curves import panels_for

    records = [{"epoch": e, "lr": 1e-3, "train_masked_nll_nats": 6.0 - e, "val_masked_nll_nats": 5.5 - e,
                "best_val_masked_nll_nats": 5.5 - e, "val_mask_ratio": 0.5} for e in (1, 2)]
    titles = [title for title, _ in panels_for(records)]
    assert titles == ["masked prior: NLL of hidden codes (nats)", "learning rate"]
