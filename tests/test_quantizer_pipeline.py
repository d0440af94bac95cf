"""FSQ and residual VQ through every stage of the CLI: train-vqvae, extract-codes, train-prior, sample,
evaluate and info."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, write_image_folder
from tests.test_evaluate import all_numbers, stripes, write_pngs
from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.formats.files import load_vqgen_file
from vqgen.config import RESIDUAL_TEMPERATURE, VQVAEConfig
from vqgen.data import read_image
from vqgen.errors import VQGenError
from vqgen.models.fsq import FiniteScalarQuantizer
from vqgen.models import GatedPixelCNN, StackPixelCNN
from vqgen.models.hierarchy import TwoLevelPrior
from vqgen.tools.common import data_for_vqvae

# (quantizer flags, K per codebook, codes per position); 8x8 images, one downsampling: 4x4 latents
KINDS = {
    "fsq": (["--quantizer", "fsq", "--fsq-levels", "4,3"], 12, 1),
    "rvq": (["--quantizer", "rvq", "--rvq-depth", "2", "-K", "16", "--rotation-trick"], 16, 2),
}


@pytest.fixture(scope="module")
def stripe_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    for orientation in ("h", "v"):
        write_pngs(root / orientation, [stripes(orientation, rng) for _ in range(40)])
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One folder for both kinds: the reference classifier evaluate trains there is shared."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_stage_works_with_the_quantizer(kind, stripe_data, checkpoints, tmp_path):
    flags, k, depth = KINDS[kind]
    paths = {name: checkpoints / f"{kind}-{name}.safetensors" for name in ("vqvae", "codes", "prior")}
    run_cli("train-vqvae", "--data", stripe_data, "--out", paths["vqvae"], "-D", "8", "--hidden", "16",
            "--res-channels", "8", "--res-blocks", "1", "--downsamples", "1", "--epochs", "1", "--batch-size", "16",
            "--val-fraction", "0.25", "--device", "cpu", *flags)
    vqvae, meta = load_vqvae(paths["vqvae"])
    assert meta["config"]["quantizer"] == kind and vqvae.cfg.num_codes == k and vqvae.cfg.code_depth == depth
    assert meta["metrics"]["val_num_codes"] == k * depth  # codes used counts every codebook

    run_cli("extract-codes", paths["vqvae"], "--out", paths["codes"], "--device", "cpu")
    tensors, codes_meta = load_vqgen_file(paths["codes"], "codes")
    stack = (depth,) if depth > 1 else ()
    n = 60 * (1 + codes_meta["augment"]["augment_copies"])  # the images' codes, then their shifted copies
    assert tensors["train_codes"].shape == (n, *stack, 4, 4) and tensors["val_codes"].shape == (20, *stack, 4, 4)
    assert 0 <= int(tensors["train_codes"].min()) and int(tensors["train_codes"].max()) < k
    assert codes_meta["num_codes"] == k and codes_meta["code_depth"] == depth and codes_meta["quantizer"] == kind
    val_images = torch.stack([image for image, _ in data_for_vqvae(meta).val])
    assert torch.equal(vqvae.encode(val_images), tensors["val_codes"].long())

    run_cli("train-prior", paths["codes"], "--out", paths["prior"], "--layers", "2", "--channels", "16",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu")
    prior, _ = load_prior(paths["prior"])
    assert prior.cfg.num_codes == k and prior.cfg.latent_shape == (4, 4 * depth)  # depth along the row
    assert prior.cfg.code_depth == depth
    # the finer codes of residual VQ get a temperature of their own, recorded for sample
    assert prior.cfg.residual_temperature == (RESIDUAL_TEMPERATURE if depth > 1 else None)
    # the layers run over the positions with a head per depth, or with --side-by-side over the map
    assert type(prior) is (StackPixelCNN if depth > 1 else GatedPixelCNN) and prior.cfg.positions == (4, 4)
    if depth > 1:
        side = tmp_path / "side-by-side.safetensors"
        run_cli("train-prior", paths["codes"], "--out", side, "--layers", "2", "--channels", "16",
                "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--side-by-side")
        model = load_prior(side)[0]
        assert type(model) is GatedPixelCNN and model.cfg.positions == (4, 4 * depth) and not model.cfg.depth_heads
        run_cli("sample", side, "--n", "2", "--out", tmp_path / "side-by-side", "--device", "cpu")
        drawn_side_by_side = load_vqgen_file(tmp_path / "side-by-side" / "codes.safetensors", "samples")[0]["codes"]
        assert drawn_side_by_side.shape == (2, depth, 4, 4) and int(drawn_side_by_side.max()) < k

    samples = tmp_path / "samples"
    run_cli("sample", paths["prior"], "--n", "8", "--out", samples, "--device", "cpu")
    drawn, record = load_vqgen_file(samples / "codes.safetensors", "samples")
    assert drawn["codes"].shape == (8, *stack, 4, 4) and int(drawn["codes"].max()) < k
    assert record["code_depth"] == depth and record["latent_shape"] == [4, 4]
    assert record.get("residual_temperature") == (RESIDUAL_TEMPERATURE if depth > 1 else None)
    given = run_cli("sample", paths["prior"], "--n", "2", "--out", tmp_path / "given", "--device", "cpu",
                    "--residual-temperature", "0.5", ok=depth > 1)
    if depth > 1:
        assert load_vqgen_file(tmp_path / "given" / "codes.safetensors", "samples")[1]["residual_temperature"] == 0.5
    else:
        assert given.exit_code == 1
        assert "--residual-temperature is for priors over the codes of a residual" in given.output
        assert not (tmp_path / "given").exists()
    decoded = vqvae.decode(drawn["codes"].long())
    first = read_image(samples / "0000.png", 1)
    assert torch.allclose(first, decoded[0], atol=1 / 255 + 1e-6)  # the PNG is the decoded stack

    out = tmp_path / "eval.json"
    run_cli("evaluate", "--vqvae", paths["vqvae"], "--codes", paths["codes"], "--prior", paths["prior"],
            "--samples", samples, "--json", out, "--kid-subsets", "5", "--device", "cpu", "--train-classifier")
    r = json.loads(out.read_text())
    assert r["reconstruction"]["num_codes"] == k * depth and r["samples"]["count"] == 8
    assert 0 <= r["samples"]["class_agreement"] <= 1
    assert all(math.isfinite(x) for x in all_numbers({s: r[s] for s in ("reconstruction", "prior", "samples")}))
    # without the code file evaluate encodes the split itself, and must lay the codes out the same way
    out2 = tmp_path / "eval2.json"
    run_cli("evaluate", "--prior", paths["prior"], "--json", out2, "--device", "cpu")
    encoded = json.loads(out2.read_text())["prior"]
    assert encoded["bits_per_code"] == pytest.approx(r["prior"]["bits_per_code"], rel=1e-6)
    assert encoded["bits_per_image"] == pytest.approx(r["prior"]["bits_per_code"] * 16 * depth, rel=1e-6)

    import vqgen  # the Python API hands out stacks too

    api_codes = vqgen.sample_codes(vqgen.load_prior(paths["prior"]), 2, labels=[0, 1])
    assert api_codes.shape == (2, *stack, 4, 4) and vqgen.decode(vqvae, api_codes).shape == (2, 1, 8, 8)

    info = json.loads(run_cli("info", paths["vqvae"], "--json").output)
    assert info["metadata"]["config"]["quantizer"] == kind
    assert "quantizer" in run_cli("info", paths["codes"]).output


def test_two_levels_take_fsq_at_every_stage(tmp_path):
    """--levels 2 --quantizer fsq: one FSQ grid per level, through codes, the two-level prior and sampling."""
    images = write_image_folder(tmp_path / "images", n_per_class=8, size=16, rgb=True)
    paths = {name: tmp_path / f"{name}.safetensors" for name in ("vqvae", "codes", "prior")}
    run_cli("train-vqvae", "--data", images, "--out", paths["vqvae"], "--epochs", "1", "--batch-size", "8",
            "--levels", "2", "--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "-D", "8",
            "--quantizer", "fsq", "--fsq-levels", "4,3", "--device", "cpu")
    vqvae, meta = load_vqvae(paths["vqvae"])
    assert (meta["config"]["quantizer"], meta["levels"], vqvae.cfg.num_codes) == ("fsq", 2, 12)
    assert all(isinstance(q, FiniteScalarQuantizer) for q in vqvae.quantizers.values())
    assert meta["metrics"]["val_num_codes"] == meta["metrics"]["val_top_num_codes"] == 12

    run_cli("extract-codes", paths["vqvae"], "--out", paths["codes"], "--device", "cpu")
    tensors, codes_meta = load_vqgen_file(paths["codes"], "codes")
    assert tensors["train_codes"].shape[1:] == (4, 4) and tensors["train_codes_top"].shape[1:] == (2, 2)
    assert codes_meta["code_depth"] == 1 and max(int(tensors[k].max()) for k in tensors if "codes" in k) < 12
    run_cli("train-prior", paths["codes"], "--out", paths["prior"], "--epochs", "1", "--batch-size", "8",
            "--layers", "2", "--channels", "8", "--device", "cpu")
    prior, _ = load_prior(paths["prior"])
    assert isinstance(prior, TwoLevelPrior) and prior.cfg.num_codes == 12
    run_cli("sample", paths["prior"], "--n", "3", "--out", tmp_path / "samples", "--device", "cpu")
    drawn, _ = load_vqgen_file(tmp_path / "samples" / "codes.safetensors", "samples")
    assert drawn["codes"].shape == (3, 4, 4) and drawn["codes_top"].shape == (3, 2, 2)
    assert int(drawn["codes"].max()) < 12 and int(drawn["codes_top"].max()) < 12


def test_two_levels_refuse_residual_vq_in_one_line_before_reading_data(tmp_path):
    with pytest.raises(VQGenError, match="--quantizer rvq takes --levels 1") as error:
        VQVAEConfig(quantizer="rvq", levels=2, image_size=(16, 16)).validate()
    assert "\n" not in str(error.value)
    result = run_cli("train-vqvae", "--data", tmp_path / "missing", "--levels", "2", "--quantizer", "rvq",
                     "--out", tmp_path / "v.safetensors", "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "error: --quantizer rvq takes --levels 1" in result.output
    assert not (tmp_path / "v.safetensors").exists()
