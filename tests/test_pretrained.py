"""The models shipped in the package: what the retraining recipe writes, and usable by name everywhere."""

from dataclasses import replace

import pytest
import torch

import vqgen
from conftest import run_cli
from vqgen.formats.files import file_sha256, FORMAT_VERSION, read_metadata
from vqgen.config import PixelCNNConfig, PriorTrainOptions, VQVAEConfig, VQVAETrainOptions, from_dict, to_dict
from vqgen.data import load_image_data
from vqgen.pretrained import KINDS, RECIPES, pretrained_path

RECIPE = RECIPES["mnist5k"]()


def test_the_shipped_files_are_small_and_half_precision():
    sizes = {kind: pretrained_path("mnist5k", kind).stat().st_size for kind in KINDS}
    assert sizes["vqvae"] + sizes["prior"] <= 8 * 2**20, sizes
    vq = vqgen.load_vqvae("mnist5k")
    assert vq.meta["pretrained"] == "mnist5k"
    from safetensors import safe_open

    with safe_open(str(pretrained_path("mnist5k", "prior")), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}


def test_the_shipped_metadata_is_what_the_retraining_recipe_writes():
    data = load_image_data(**to_dict(RECIPE.data))
    vq_meta, prior_meta = (read_metadata(pretrained_path("mnist5k", kind)) for kind in ("vqvae", "prior"))
    assert vq_meta["format_version"] == prior_meta["format_version"] == FORMAT_VERSION
    assert VQVAEConfig.from_dict(vq_meta["config"]) == replace(RECIPE.vqvae, in_channels=1, image_size=(28, 28)).sized()
    # train-vqvae records its options settled for the data; the shipped run predates --flip (grey: off), and
    # its --gan-weight (0.1 then) and --disc-channels (64 then) had no effect without the discriminator, which
    # grey images do not get
    recipe = RECIPE.vqvae_train.settled_for(1, (28, 28))
    shipped = from_dict(VQVAETrainOptions, vq_meta["train_options"], {"flip": False})
    assert not shipped.gan.gan and not recipe.gan.gan
    unused = {"gan_weight": recipe.gan.gan_weight, "disc_channels": recipe.gan.disc_channels}
    assert replace(shipped, gan=replace(shipped.gan, **unused)) == recipe
    assert vq_meta["dataset"] == data.spec
    # train-prior settles the width left open by image kind (digits: grey)
    expected_prior = replace(RECIPE.prior.with_width_for(photos=False), num_codes=RECIPE.vqvae.num_codes,
                             latent_shape=(7, 7), num_classes=10).sized()
    assert PixelCNNConfig.from_dict(prior_meta["config"]) == expected_prior
    # options added after the files were written read as what the shipped run did (no weight average)
    assert from_dict(PriorTrainOptions, prior_meta["train_options"], {"ema_decay": 0.0}) == RECIPE.prior_train
    # the prior names its VQ-VAE by the shipped file, and by that file's checksum
    assert prior_meta["vqvae_sha256"] == file_sha256(pretrained_path("mnist5k", "vqvae"))
    assert prior_meta["vqvae_path"] == pretrained_path("mnist5k", "vqvae").name  # a bare name: found beside it
    classifier_meta = read_metadata(pretrained_path("mnist5k", "classifier"))
    # train_classifier records the warm-up it used: at most a tenth of the steps
    warmup = min(RECIPE.classifier_train.warmup_steps, classifier_meta["steps"] // 10)
    assert classifier_meta["train_options"] == to_dict(replace(RECIPE.classifier_train, warmup_steps=warmup))
    assert classifier_meta["dataset"] == data.spec


def test_sampling_the_shipped_prior_needs_no_training(tmp_path):
    run_cli("sample", "mnist5k", "--label", "7", "--n", "6", "--out", tmp_path / "sevens", "--device", "cpu")
    assert len(list((tmp_path / "sevens").glob("[0-9]*.png"))) == 6 and (tmp_path / "sevens" / "grid.png").is_file()
    vq, prior = vqgen.load_pretrained("mnist5k")
    codes = vqgen.sample_codes(prior, 4, labels="3", seed=0)
    images = vqgen.decode(vq, codes)
    assert images.shape == (4, 1, 28, 28) and torch.isfinite(images).all()


@pytest.mark.parametrize("args", [
    ["reconstruct", "mnist5k", "--n", "4"], ["info", "mnist5k/prior"], ["info", "mnist5k/vqvae"],
    ["interpolate", "mnist5k", "mnist5k:0", "mnist5k:1", "--steps", "3"],
])
def test_the_shipped_models_load_wherever_a_checkpoint_path_is_accepted(tmp_path, args):
    out = [] if args[0] == "info" else ["--out", tmp_path / ("x.png" if args[0] == "interpolate" else "out")]
    run_cli(*args, *out, *([] if args[0] == "info" else ["--device", "cpu"]))


def test_evaluate_scores_the_shipped_models(tmp_path):
    run_cli("sample", "mnist5k", "--n", "20", "--out", tmp_path / "s", "--device", "cpu")
    result = run_cli("evaluate", "--vqvae", "mnist5k", "--prior", "mnist5k", "--samples", tmp_path / "s",
                     "--device", "cpu", "--kid-subsets", "5", "--json", tmp_path / "e.json")
    assert "bits" in result.output and (tmp_path / "e.json").is_file()


def test_retraining_never_names_a_folder_it_removed(monkeypatch, tmp_path, capsys):
    import re
    import sys
    from pathlib import Path

    from vqgen import pretrained

    monkeypatch.setattr(pretrained, "build", lambda name, out, work: (work / "vqvae.safetensors").write_text("x"))
    monkeypatch.setattr(sys, "argv", ["vqgen.pretrained", "--out", str(tmp_path / "out")])
    pretrained.main()
    said = capsys.readouterr().out
    named = re.search(r"files and logs in (\S+?)\)", said)
    assert named is None or Path(named[1]).is_dir(), said
    assert "removed" in said
    monkeypatch.setattr(sys, "argv", ["vqgen.pretrained", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    (tmp_path / "w").mkdir()
    pretrained.main()
    assert f"files and logs in {tmp_path / 'w'}" in capsys.readouterr().out and (tmp_path / "w").is_dir()
