"""The whole pipeline with a two-level VQ-VAE: codes, priors, samples, tools, evaluate, resume."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vqgen
from conftest import TINY_PRIOR, TINY_VQVAE, run_cli, write_image_folder
from test_resume import AtStep, assert_same_weights, logged, send_sigterm
from vqgen.formats.checkpoints import load_prior
from vqgen.formats.files import load_vqgen_file, read_metadata
from vqgen.models.hierarchy import TwoLevelPrior
from vqgen.tools.common import data_for_vqvae
from vqgen.train.resume import resume_path

CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def two_levels(tmp_path_factory) -> dict[str, Path]:
    """A two-level VQ-VAE (16x16 RGB -> 4x4 bottom and 2x2 top maps), its codes, prior and samples."""
    root = tmp_path_factory.mktemp("two_levels")
    paths = {k: root / f"{k}.safetensors" for k in ("vqvae", "codes", "prior")}
    paths["images"] = write_image_folder(root / "images", n_per_class=16, size=16, rgb=True)
    run_cli("train-vqvae", "--data", paths["images"], "--out", paths["vqvae"], "--epochs", "1", "--batch-size", "8",
            "--levels", "2", "--attention", *TINY_VQVAE, *CPU)
    run_cli("extract-codes", paths["vqvae"], "--out", paths["codes"], *CPU)
    run_cli("train-prior", paths["codes"], "--out", paths["prior"], "--epochs", "1", "--batch-size", "8",
            "--label-dropout", "0.2", *TINY_PRIOR, *CPU)
    for sampler in ("cached", "full"):
        paths[sampler] = root / sampler
        run_cli("sample", paths["prior"], "--out", paths[sampler], "--n", "5", "--guidance", "2", "--sampler", sampler, *CPU)
    return paths


def test_extract_codes_writes_both_maps_which_are_the_encoders_codes(two_levels):
    tensors, meta = load_vqgen_file(two_levels["codes"], "codes")
    assert (meta["levels"], meta["latent_shape"], meta["latent_shape_top"]) == (2, [4, 4], [2, 2])
    n = meta["num_train"]
    assert tensors["train_codes"].shape == (n, 4, 4) and tensors["train_codes_top"].shape == (n, 2, 2)
    assert set(meta["codebook_audit_top"]) == set(meta["codebook_audit"]) == {"train", "val"}
    vq = vqgen.load_vqvae(two_levels["vqvae"])
    images = torch.stack([image for image, _ in data_for_vqvae(vq.meta).train])
    top, bottom = vqgen.encode(vq, images)  # the images' own codes come first, then those of shifted copies
    assert len(images) * (1 + meta["augment"]["augment_copies"]) == n
    assert torch.equal(top, tensors["train_codes_top"][:len(images)].long())
    assert torch.equal(bottom, tensors["train_codes"][:len(images)].long())
    assert torch.equal(vqgen.decode(vq, (top, bottom)), vqgen.reconstruct(vq, images))


def test_one_prior_file_holds_both_levels(two_levels):
    prior, meta = load_prior(two_levels["prior"])
    assert isinstance(prior, TwoLevelPrior) and meta["levels"] == 2 and meta["latent_shape_top"] == [2, 2]
    assert prior.top.cfg.latent_shape == (2, 2) and prior.bottom.cfg.cond_shape == (2, 2)
    assert prior.top.cond_stack is None and prior.bottom.cond_stack is not None
    assert {key.split(".")[0] for key in load_file(str(two_levels["prior"]))} == {"top", "bottom"}
    record = logged(two_levels["prior"])[-1]
    assert {"val_top_bits_per_code", "val_bottom_bits_per_code", "train_top_bits_per_code"} <= set(record)
    top, bottom = record["val_top_bits_per_code"], record["val_bottom_bits_per_code"]
    assert record["val_bits_per_code"] == pytest.approx((4 * top + 16 * bottom) / 20)  # per code of both maps


def test_evaluate_counts_the_bits_of_both_maps(two_levels, tmp_path):
    out = tmp_path / "eval.json"
    run_cli("evaluate", "--prior", two_levels["prior"], "--codes", two_levels["codes"], "--json", out, *CPU)
    p = json.loads(out.read_text())["prior"]
    assert p["bits_per_image"] == pytest.approx(4 * p["top_bits_per_code"] + 16 * p["bottom_bits_per_code"])
    assert p["bits_per_code"] == pytest.approx(p["bits_per_image"] / 20)
    assert min(p["top_bits_per_code"], p["bottom_bits_per_code"]) <= p["bits_per_code"]
    weighted = (4 * p["top_histogram_bits_per_code"] + 16 * p["bottom_histogram_bits_per_code"]) / 20
    assert p["histogram_bits_per_code"] == pytest.approx(weighted)


def test_samples_are_top_then_bottom_maps_decoded_and_both_samplers_agree(two_levels):
    cached = load_file(str(two_levels["cached"] / "codes.safetensors"))
    full = load_file(str(two_levels["full"] / "codes.safetensors"))
    assert cached["codes_top"].shape == (5, 2, 2) and cached["codes"].shape == (5, 4, 4)
    assert all(torch.equal(cached[k], full[k]) for k in ("codes", "codes_top", "labels"))
    record = read_metadata(two_levels["cached"] / "codes.safetensors")
    assert record["levels"] == 2 and record["latent_shape_top"] == [2, 2]
    vq = vqgen.load_vqvae(two_levels["vqvae"])
    decoded = vqgen.decode(vq, (cached["codes_top"], cached["codes"]))
    for i, image in enumerate(decoded):
        png = np.asarray(Image.open(two_levels["cached"] / f"{i:04d}.png"), dtype=np.float32) / 255
        assert np.abs(png - image.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_the_python_api_samples_and_decodes_two_levels(two_levels):
    vq, prior = vqgen.load_vqvae(two_levels["vqvae"]), vqgen.load_prior(two_levels["prior"])
    codes = vqgen.sample_codes(prior, 3, labels="b", guidance=2.0, seed=1)
    assert [c.shape for c in codes] == [(3, 2, 2), (3, 4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(codes, vqgen.sample_codes(prior, 3, labels="b", guidance=2.0, seed=1)))
    assert vqgen.decode(vq, codes).shape == (3, 3, 16, 16)
    with pytest.raises(vqgen.errors.VQGenError, match="2 level"):
        vqgen.decode(vq, codes[1])


def test_tools_take_two_levels(two_levels, tmp_path):
    result = run_cli("reconstruct", two_levels["vqvae"], "--out", tmp_path / "recon", "--n", "3", *CPU)
    assert (tmp_path / "recon" / "grid.png").is_file() and "PSNR" in result.output
    a, b = (str(two_levels["images"] / c / "00.png") for c in ("a", "b"))
    result = run_cli("interpolate", two_levels["vqvae"], a, b, "--out", tmp_path / "walk.png", "--steps", "3", *CPU)
    assert "of 20 codes differ" in result.output  # 4 top + 16 bottom positions
    assert Image.open(tmp_path / "walk.codes.png").size[0] > Image.open(tmp_path / "walk.png").size[1]
    info = json.loads(run_cli("info", two_levels["codes"], "--json").output)
    assert info["metadata"]["levels"] == 2 and "val_codes_top" in info["tensors"]
    refused = run_cli("codebook", two_levels["vqvae"], "--out", tmp_path / "cb.png", *CPU, ok=False)
    assert refused.exit_code == 1 and "two-level VQ-VAE" in refused.output and not (tmp_path / "cb.png").exists()


def test_sample_refuses_a_vqvae_with_other_levels(two_levels, tiny_pipeline, tmp_path):
    result = run_cli("sample", two_levels["prior"], "--out", tmp_path / "s", "--vqvae", tiny_pipeline["vqvae"],
                     "--allow-vqvae-mismatch", *CPU, ok=False)
    assert result.exit_code == 1 and "a VQ-VAE of 1 level(s), but the prior" in result.output
    assert not (tmp_path / "s").exists()


VQVAE_ARGS = ("--hidden 16 --res-channels 8 -K 16 -D 8 --epochs 2 --batch-size 8 --val-fraction 0.25 --levels 2 "
              "--restart-every 3 --dead-threshold 10 --seed 3 --device cpu").split()  # 4 steps per epoch


def test_a_stopped_two_level_vqvae_resumes_to_identical_weights(tmp_path, image_folder):
    straight, out = tmp_path / "a" / "vq.safetensors", tmp_path / "b" / "vq.safetensors"
    run_cli("train-vqvae", "--data", image_folder, "--out", straight, *VQVAE_ARGS)
    args = ["train-vqvae", "--data", image_folder, "--out", out, *VQVAE_ARGS]
    with AtStep(6, send_sigterm):  # epoch 2, batch 2 of 4
        assert run_cli(*args, ok=False).exit_code == 143
    assert "model.top.quantizer.usage" in load_file(str(resume_path(out)))
    run_cli(*args, "--resume", "auto")
    assert_same_weights(straight, out)
    assert logged(out) == logged(straight)


def test_a_stopped_two_level_prior_resumes_to_identical_weights(tmp_path, two_levels):
    args = [*TINY_PRIOR, "--epochs", "2", "--batch-size", "8", "--dropout", "0.2", "--label-dropout", "0.2", *CPU]
    straight, out = tmp_path / "a" / "prior.safetensors", tmp_path / "b" / "prior.safetensors"
    run_cli("train-prior", two_levels["codes"], "--out", straight, *args)
    with AtStep(4, lambda: os.kill(os.getpid(), signal.SIGINT)):  # mid-epoch 2 (3 steps per epoch)
        assert run_cli("train-prior", two_levels["codes"], "--out", out, *args, ok=False).exit_code == 130
    run_cli("train-prior", two_levels["codes"], "--out", out, *args, "--resume", "auto")
    assert_same_weights(straight, out)
    assert_same_weights(resume_path(straight), resume_path(out))
    assert logged(out) == logged(straight)


def test_two_level_codes_refuse_the_transformer_prior(two_levels, tmp_path):
    out = tmp_path / "prior.safetensors"
    result = run_cli("train-prior", two_levels["codes"], "--out", out, "--arch", "transformer", *CPU, ok=False)
    assert result.exit_code == 1 and "take --arch pixelcnn priors" in result.output and not out.exists()
