"""Both prior architectures through the CLI and the API: train-prior --arch, sample, evaluate, info, old files."""

import json

import pytest
import torch

import vqgen
from tests.conftest import TINY_TRANSFORMER, run_cli, train_guided_prior
from vqgen.formats.checkpoints import load_prior
from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.config import PixelCNNConfig, TransformerConfig
from vqgen.errors import VQGenError
from vqgen.models import GatedPixelCNN, TransformerPrior


@pytest.fixture(scope="module")
def transformer_prior(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("transformer") / "prior.safetensors"
    return train_guided_prior(tiny_pipeline["codes"], out, *TINY_TRANSFORMER)


@pytest.fixture(scope="module")
def priors(tiny_pipeline, transformer_prior):
    return {"pixelcnn": tiny_pipeline["prior"], "transformer": transformer_prior}


def read_codes(folder):
    tensors, meta = load_vqgen_file(folder / "codes.safetensors", "samples")
    return tensors["codes"].long(), meta


def test_train_prior_records_the_architecture(transformer_prior):
    model, meta = load_prior(transformer_prior)
    assert isinstance(model, TransformerPrior) and not model.training
    cfg = meta["config"]
    assert cfg["arch"] == "transformer" and (cfg["num_layers"], cfg["channels"], cfg["num_heads"]) == (2, 16, 2)
    assert cfg["label_dropout"] == 0.3 and cfg["num_classes"] == 10 and model.null_label == 10
    assert cfg["dropout"] == TransformerConfig.dropout and "kernel_size" not in cfg
    assert meta["metrics"]["val_bits_per_code"] < 5.0  # K = 32: below the 5 bits of a uniform guess


@pytest.mark.parametrize("arch", ["pixelcnn", "transformer"])
def test_both_architectures_through_sample_evaluate_info_and_the_api(arch, priors, tiny_pipeline, tmp_path):
    path = priors[arch]
    for sampler in ("cached", "full"):
        run_cli("sample", path, "--n", "5", "--label", "3,8", "--seed", "2", "--sampler", sampler,
                "--out", tmp_path / sampler, "--device", "cpu")
    cached, record = read_codes(tmp_path / "cached")
    assert torch.equal(read_codes(tmp_path / "full")[0], cached) and record["sampler"] == "cached"
    assert (tmp_path / "cached" / "grid.png").is_file()

    prior = vqgen.load_prior(path)
    assert isinstance(prior, GatedPixelCNN if arch == "pixelcnn" else TransformerPrior)
    assert torch.equal(vqgen.sample_codes(prior, 5, labels=["3", "8", "3", "8", "3"], seed=2), cached)

    run_cli("evaluate", "--codes", tiny_pipeline["codes"], "--prior", path, "--json", tmp_path / "e.json",
            "--device", "cpu")
    evaluated = json.loads((tmp_path / "e.json").read_text())["prior"]
    assert evaluated["bits_per_code"] == pytest.approx(prior.meta["metrics"]["val_bits_per_code"], rel=1e-5)

    info = json.loads(run_cli("info", path, "--json").output)
    assert info["metadata"]["config"]["arch"] == arch
    assert info["description"] == f"a prior ({'PixelCNN' if arch == 'pixelcnn' else 'transformer'}) checkpoint"


def test_guided_transformer_sampling_is_the_same_through_cli_and_api(tiny_pipeline, transformer_prior, tmp_path):
    # one epoch teaches the tiny prior little about its classes: guide a random one with sharp logits instead
    _, meta = load_vqgen_file(transformer_prior)
    torch.manual_seed(0)
    model = TransformerPrior(TransformerConfig.from_dict(meta["config"]))
    with torch.no_grad():
        model.head.weight.mul_(20)
        model.start.weight.mul_(50)
    path = tmp_path / "prior.safetensors"
    save_vqgen_file(path, model.state_dict(), meta)
    run_cli("sample", path, "--vqvae", tiny_pipeline["vqvae"], "--n", "4", "--label", "7", "--guidance", "2.5",
            "--seed", "4", "--out", tmp_path / "s", "--device", "cpu", "--allow-vqvae-mismatch")
    by_cli, record = read_codes(tmp_path / "s")
    assert record["guidance"] == 2.5
    prior = vqgen.load_prior(path)
    assert torch.equal(vqgen.sample_codes(prior, 4, labels="7", seed=4, guidance=2.5, sampler="full"), by_cli)
    assert not torch.equal(vqgen.sample_codes(prior, 4, labels="7", seed=4), by_cli)


def test_a_prior_file_without_arch_is_a_pixelcnn_and_an_unknown_arch_is_refused(tiny_pipeline, tmp_path):
    tensors, meta = load_vqgen_file(tiny_pipeline["prior"])
    old = tmp_path / "old.safetensors"
    save_vqgen_file(old, tensors, {**meta, "config": {k: v for k, v in meta["config"].items() if k != "arch"}})
    model, _ = load_prior(old)
    assert isinstance(model, GatedPixelCNN) and model.cfg == load_prior(tiny_pipeline["prior"])[0].cfg
    for name, value in model.state_dict().items():
        assert torch.equal(value, tensors[name]), name
    assert json.loads(run_cli("info", old, "--json").output)["description"] == "a prior (PixelCNN) checkpoint"

    future = tmp_path / "future.safetensors"
    save_vqgen_file(future, tensors, {**meta, "config": {**meta["config"], "arch": "mamba"}})
    with pytest.raises(VQGenError, match=r"future.safetensors: unknown prior architecture 'mamba'"):
        load_prior(future)
    result = run_cli("sample", future, "--out", tmp_path / "s", "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "unknown prior architecture 'mamba'" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["--arch", "transformer", "--kernel-size", "5"], "--kernel-size is an option of --arch pixelcnn, not of --arch transformer"),
    (["--heads", "2"], "--heads is an option of --arch transformer or masked, not of --arch pixelcnn"),
    (["--arch", "lstm"], "--arch must be one of pixelcnn, transformer, masked, not 'lstm'"),
    (["--arch", "transformer", "--channels", "10", "--heads", "4"], "--heads must divide --channels 10"),
])
def test_train_prior_refuses_options_of_the_other_architecture(tiny_pipeline, tmp_path, args, message):
    result = run_cli("train-prior", tiny_pipeline["codes"], "--out", tmp_path / "p.safetensors", *args, ok=False)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_help_shows_each_architectures_defaults_from_its_config():
    help_text = " ".join(run_cli("train-prior", "--help").output.replace("│", " ").split())  # rich boxes
    for field, flag in [("num_layers", "--layers"), ("channels", "--channels")]:
        pixelcnn = getattr(PixelCNNConfig, field)  # None: sized to the map, shown as auto
        shown = f"pixelcnn {'auto' if pixelcnn is None else pixelcnn}, transformer {getattr(TransformerConfig, field)}"
        assert flag in help_text and shown in help_text
    assert "(transformer and masked only)" in help_text and "(pixelcnn only)" in help_text


def test_the_pixelcnn_width_follows_the_image_kind_unless_given():
    from vqgen.config import PIXELCNN_CHANNELS, PIXELCNN_CHANNELS_PHOTOS

    open_width = PixelCNNConfig()
    assert open_width.channels is None and open_width.sized().channels == PIXELCNN_CHANNELS
    assert open_width.with_width_for(photos=True).sized().channels == PIXELCNN_CHANNELS_PHOTOS != PIXELCNN_CHANNELS
    assert PixelCNNConfig(channels=80).with_width_for(photos=True).channels == 80


@pytest.mark.parametrize("image, levels, width", [
    ({"channels": 3, "size": [32, 32]}, 1, "photos"),
    ({"channels": 1, "size": [28, 28]}, 1, "grey"),
    ({"channels": 3, "size": [8, 8]}, 1, "grey"),  # tiny colour images keep the grey defaults
    ({"channels": 3, "size": [64, 64]}, 2, "grey"),  # two levels: measured at the grey width only
])
def test_train_prior_settles_the_width_by_the_codes_image_kind(monkeypatch, tmp_path, image, levels, width):
    from types import SimpleNamespace

    from vqgen.config import PIXELCNN_CHANNELS, PIXELCNN_CHANNELS_PHOTOS, PriorTrainOptions
    from vqgen.stages import train_prior as stage

    meta = {"image": image, "num_codes": 16, "label_names": ["a", "b"], "latent_shape_top": [4, 4]}
    codes = SimpleNamespace(meta=meta, labelled=True, prior_latent_shape=(8, 8), depth=1, levels=levels,
                            train=[0] * 4, val=[0], variants=1)
    trained = {}
    monkeypatch.setattr(stage, "load_codes", lambda path: codes)
    monkeypatch.setattr(stage, "train_prior", lambda codes, cfg, *rest: trained.setdefault("cfg", cfg))
    stage.run(tmp_path / "codes.safetensors", PixelCNNConfig(), PriorTrainOptions(), tmp_path / "prior.safetensors")
    cfg = trained["cfg"]
    widths = [cfg.top.channels, cfg.bottom.channels] if levels == 2 else [cfg.channels]
    assert set(widths) == {PIXELCNN_CHANNELS_PHOTOS if width == "photos" else PIXELCNN_CHANNELS}
