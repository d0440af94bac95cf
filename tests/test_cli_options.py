"""The command line is made from the config dataclasses: every option, its default and help in one place."""

import dataclasses

import torch
import pytest
from typer.testing import CliRunner

from conftest import TINY_VQVAE, run_cli
from vqgen.formats.files import read_metadata
from vqgen.cli import app
from vqgen.cli.options import option_fields
from vqgen.config import VQVAE_PRESETS, DataOptions, GanOptions, PixelCNNConfig, PriorTrainOptions, TransformerConfig, VQVAEConfig, VQVAETrainOptions


@pytest.mark.parametrize(
    "command, groups",
    [("train-vqvae", (DataOptions, VQVAEConfig, VQVAETrainOptions, GanOptions)), ("train-prior", (PriorTrainOptions,))],
)
def test_every_config_option_is_a_flag_with_its_dataclass_default(command, groups):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for group in groups:
        for f, meta, _ in option_fields(group):
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            assert flag in result.output, flag
            if f.default not in (None, dataclasses.MISSING) and not isinstance(f.default, bool):
                assert f"[default: {f.default}]" in result.output, (flag, f.default)


def test_the_prior_options_show_each_architectures_default():
    result = CliRunner().invoke(app, ["train-prior", "--help"], env={"COLUMNS": "400"})
    pixelcnn, transformer = PixelCNNConfig(), TransformerConfig()
    # a default left to the data (the PixelCNN's width follows the image kind, its depth the map) shows as auto
    assert pixelcnn.channels is None and f"pixelcnn auto, transformer {transformer.channels}" in result.output
    assert pixelcnn.num_layers is None and f"pixelcnn auto, transformer {transformer.num_layers}" in result.output
    assert "--kernel-size" in result.output and "--heads" in result.output


def test_a_preset_fills_the_options_not_given_and_given_ones_win(image_folder, tmp_path):
    out = tmp_path / "vqvae.safetensors"
    run_cli("train-vqvae", "--data", image_folder, "--preset", "best", "--epochs", "1", "--out", out, "--device", "cpu",
            *TINY_VQVAE)
    recorded = read_metadata(out)["train_options"]
    best = VQVAE_PRESETS["best"]
    assert (recorded["batch_size"], recorded["lr"]) == (best["batch_size"], best["lr"])  # from the preset
    assert recorded["epochs"] == 1  # given on the command line
    plain = VQVAETrainOptions()
    assert (plain.batch_size, plain.lr) != (best["batch_size"], best["lr"])  # so the preset really changed them


def test_an_unknown_preset_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["train-vqvae", "--preset", "turbo", "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code != 0 and "turbo" in result.output and not list(tmp_path.iterdir())


def test_the_warm_up_option_reaches_the_schedule_and_the_vqvae_warms_up_longer_than_other_trainers(image_folder,
                                                                                                     tmp_path):
    assert VQVAETrainOptions().warmup_steps > PriorTrainOptions().warmup_steps
    out = tmp_path / "vqvae.safetensors"
    run_cli("train-vqvae", "--data", image_folder, "--epochs", "1", "--batch-size", "8", "--lr", "0.01",
            "--warmup-steps", "40", "--out", out, "--device", "cpu", *TINY_VQVAE)
    meta = read_metadata(out)
    steps = meta["metrics"]["step"]
    assert meta["train_options"]["warmup_steps"] == 40 and 0 < steps < 40
    assert meta["metrics"]["lr"] == pytest.approx(0.01 * (steps + 1) / 40)  # still warming up after the epoch


def test_train_prior_reads_its_codes_with_the_workers_asked_for(code_file, tmp_path):
    from vqgen.config import PixelCNNConfig, PriorTrainOptions
    from vqgen.formats.codes import load_codes
    from vqgen.train.prior import PriorTrainer

    codes = load_codes(code_file)
    cfg = PixelCNNConfig(num_codes=16, latent_shape=(4, 4), num_layers=2, channels=8)
    opts = PriorTrainOptions(num_workers=2, device="cpu")
    trainer = PriorTrainer(codes, cfg, opts, torch.device("cpu"), tmp_path / "p.safetensors")
    assert trainer.train_batches.loader.num_workers == 2 and trainer.val_batches.loader.num_workers == 2


def test_train_classifier_help_says_the_warmup_is_capped():
    shown = run_cli("train-classifier", "--help").output
    assert "tenth" in shown


@pytest.mark.parametrize("arch, given, trained", [("pixelcnn", None, 12), ("masked", None, 21), ("masked", 3, 3)])
def test_the_prior_trains_for_its_architectures_epochs_unless_told(code_file, tmp_path, monkeypatch, arch, given,
                                                                  trained):
    """--epochs left open: 12 for the raster priors, 21 for a masked one (it learns from its hidden codes only);
    the settled number is what the run trains for and records."""
    import vqgen.train.prior as prior_training
    from vqgen.config import PRIOR_ARCHS
    from vqgen.formats.codes import load_codes

    seen = {}
    monkeypatch.setattr(prior_training, "train", lambda make, opts, out, resume: seen.setdefault("epochs", opts.epochs))
    cfg = PRIOR_ARCHS[arch](num_codes=16, latent_shape=(4, 4), num_layers=2, channels=8)
    prior_training.train_prior(load_codes(code_file), cfg, PriorTrainOptions(epochs=given), tmp_path / "p.safetensors")
    assert seen["epochs"] == trained
    with pytest.raises(Exception, match="--epochs must be at least 1"):
        PriorTrainOptions(epochs=0).validate()
