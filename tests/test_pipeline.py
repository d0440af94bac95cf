"""The four stages end to end through the CLI, and the files that pass between them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.conftest import TINY_PRIOR, TINY_VQVAE, run_cli, train_guided_prior, write_image_folder
from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.formats.files import file_sha256
from vqgen.errors import VQGenError


def read_header(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["vqgen"]), {k: f.get_tensor(k) for k in f.keys()}


def test_vqvae_checkpoint_records_everything_later_stages_need(tiny_pipeline):
    meta, tensors = read_header(tiny_pipeline["vqvae"])
    assert meta["kind"] == "vqvae" and meta["format_version"] == 1
    assert meta["config"]["num_codes"] == 32 and meta["latent_shape"] == [7, 7]
    # the defaults, head sized for 28x28 grey images (vqgen.config.VQVAEConfig.sized): recorded as used
    assert meta["config"]["codebook_dim"] == 6 and meta["config"]["head_channels"] == 16
    assert meta["train_options"]["augment_shift"] == 2 and meta["train_options"]["gan"]["recon_loss"] == "psnr"
    assert meta["dataset"]["data"] == "mnist5k" and meta["label_names"] == [str(d) for d in range(10)]
    assert meta["dataset"]["num_train"] == 4500 and meta["dataset"]["num_val"] == 500
    assert {"val_psnr", "val_perplexity", "val_codes_used", "train_recon_mse"} <= set(meta["metrics"])
    assert "quantizer.codebook" in tensors
    assert (tiny_pipeline["vqvae"].parent / "vqvae.recon.png").is_file()
    log = (tiny_pipeline["vqvae"].parent / "vqvae.metrics.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["epoch"] == 1


def test_code_file_is_readable_with_safetensors_alone(tiny_pipeline):
    meta, tensors = read_header(tiny_pipeline["codes"])
    assert meta["kind"] == "codes" and meta["num_codes"] == 32
    n = 4500 * (1 + meta["augment"]["augment_copies"])  # the training images' codes, then their shifted copies
    assert tensors["train_codes"].shape == (n, 7, 7) and tensors["val_codes"].shape == (500, 7, 7)
    assert tensors["train_codes"].dtype == torch.int16
    assert tensors["train_labels"].shape == (n,) and set(tensors["val_labels"].tolist()) == set(range(10))
    assert int(tensors["train_codes"].max()) < 32 and int(tensors["train_codes"].min()) >= 0
    assert meta["vqvae_sha256"] == file_sha256(tiny_pipeline["vqvae"])
    assert {"usage", "perplexity", "top10_share", "dead_codes"} <= set(meta["codebook_audit"]["train"])


def test_codes_match_the_vqvae_encoding(tiny_pipeline):
    from vqgen.data import load_image_data

    model, _ = load_vqvae(tiny_pipeline["vqvae"])
    data = load_image_data("mnist5k")
    images = torch.stack([data.val[i][0] for i in range(8)])
    _, tensors = read_header(tiny_pipeline["codes"])
    assert torch.equal(model.encode(images), tensors["val_codes"][:8].long())


def test_prior_checkpoint_points_at_its_vqvae(tiny_pipeline):
    model, meta = load_prior(tiny_pipeline["prior"])
    assert meta["kind"] == "prior" and model.conditional and model.cfg.num_classes == 10
    assert meta["vqvae_sha256"] == file_sha256(tiny_pipeline["vqvae"])
    assert {"val_bits_per_code", "val_nll_nats", "train_nll_nats"} <= set(meta["metrics"])


@pytest.mark.parametrize("sampler", ["full", "cached"])
def test_sample_writes_grid_pngs_and_codes(tiny_pipeline, tmp_path, sampler):
    out = tmp_path / "samples"
    run_cli("sample", tiny_pipeline["prior"], "--n", "20", "--out", out, "--sampler", sampler, "--device", "cpu")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "grid.png" in pngs and len(pngs) == 21  # 2 per class x 10 classes + grid
    meta, tensors = read_header(out / "codes.safetensors")
    assert meta["kind"] == "samples" and tensors["codes"].shape == (20, 7, 7)
    assert tensors["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert meta["labels_requested"] == tensors["labels"].tolist()


def test_n_counts_images_spread_over_the_classes_one_grid_row_each(tiny_pipeline, tmp_path):
    from PIL import Image

    out = tmp_path / "samples"
    run_cli("sample", tiny_pipeline["prior"], "--n", "23", "--out", out, "--sampler", "full", "--device", "cpu")
    meta, tensors = read_header(out / "codes.safetensors")
    assert tensors["codes"].shape == (23, 7, 7) and len(list(out.glob("0*.png"))) == 23
    expected = [c for c in range(10) for _ in range(3 if c < 3 else 2)]  # the remainder goes to the first classes
    assert tensors["labels"].tolist() == expected == meta["labels_requested"]
    with Image.open(out / "grid.png") as grid:
        cell = 5 * 28 + 2  # image (enlarged 5x, for a grid at least 400 px wide) and padding
        assert grid.size == (3 * cell + 2, 10 * cell + 2)  # 3 columns (the most per class), 10 rows
        pixels = torch.from_numpy(np.array(grid)).float()
    third_column = slice(2 * cell + 2, 3 * cell)
    assert pixels[2 + 2 * cell : 3 * cell, third_column].std() > 0  # class 2's third sample
    assert (pixels[2 + 3 * cell : 4 * cell, third_column] == 128).all()  # class 3 has two: a blank cell


def test_fewer_images_than_classes():
    from vqgen.sampling.labels import parse_labels
    from vqgen.stages.sample import grid_cells

    labels, rows = parse_labels(None, [str(c) for c in range(10)], True, 3)
    assert labels == [0, 1, 2] and rows == [1, 1, 1]
    cells, columns = grid_cells(torch.rand(3, 1, 4, 4), rows)
    assert cells.shape[0] == 3 and columns == 1
    assert parse_labels("all", ["a", "b"], True, 5) == ([0, 0, 0, 1, 1], [3, 2])
    assert parse_labels("b,a", ["a", "b"], True, 3) == ([1, 0, 1], None)


@pytest.fixture(scope="module")
def guided_prior(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("guided") / "prior.safetensors"
    return train_guided_prior(tiny_pipeline["codes"], out, *TINY_PRIOR)


def test_guided_sampling_through_the_cli_and_the_api(tiny_pipeline, guided_prior, tmp_path):
    import vqgen

    model, meta = load_prior(guided_prior)
    assert meta["config"]["label_dropout"] == 0.3 and model.null_label == 10
    out = tmp_path / "s"
    run_cli("sample", guided_prior, "--vqvae", tiny_pipeline["vqvae"], "--n", "4", "--label", "3", "--guidance", "2.5",
            "--seed", "4", "--out", out, "--device", "cpu")
    record, tensors = read_header(out / "codes.safetensors")
    assert record["guidance"] == 2.5
    prior = vqgen.load_prior(guided_prior)
    by_api = vqgen.sample_codes(prior, 4, labels="3", seed=4, guidance=2.5)  # the cached sampler
    assert torch.equal(tensors["codes"].long(), by_api)
    assert torch.equal(vqgen.sample_codes(prior, 4, labels="3", seed=4, guidance=2.5, sampler="full"), by_api)
    assert not torch.equal(vqgen.sample_codes(prior, 4, labels="3", seed=4), by_api)
    with pytest.raises(VQGenError, match="guidance must be >= 0"):
        vqgen.sample_codes(prior, 4, labels="3", guidance=-1)


def test_sampling_is_seeded(tiny_pipeline, tmp_path):
    def draw(seed, folder):
        run_cli("sample", tiny_pipeline["prior"], "--n", "6", "--label", "3", "--out", tmp_path / folder,
                "--seed", seed, "--sampler", "full", "--temperature", "0.8", "--top-k", "5")
        return read_header(tmp_path / folder / "codes.safetensors")[1]["codes"]

    first, again, other = draw(1, "a"), draw(1, "b"), draw(2, "c")
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_label_options(tiny_pipeline, tmp_path):
    run_cli("sample", tiny_pipeline["prior"], "--n", "4", "--label", "7,2", "--out", tmp_path / "s",
            "--sampler", "full")
    _, tensors = read_header(tmp_path / "s" / "codes.safetensors")
    assert tensors["labels"].tolist() == [7, 2, 7, 2]


def test_training_is_repeatable_with_a_seed(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=5)
    for name in ("a", "b"):
        run_cli("train-vqvae", "--data", folder, "--epochs", "1", "--batch-size", "4", "--seed", "3",
                "--out", tmp_path / f"{name}.safetensors", *TINY_VQVAE)
    a, _ = load_vqvae(tmp_path / "a.safetensors")
    b, _ = load_vqvae(tmp_path / "b.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_folder_pipeline_with_labels_from_subfolders(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=6, rgb=True, classes=("cat", "dog", "owl"))
    ck = tmp_path / "ck"
    run_cli("train-vqvae", "--data", folder, "--epochs", "1", "--batch-size", "4", "--out", ck / "vq.safetensors",
            *TINY_VQVAE)
    run_cli("extract-codes", ck / "vq.safetensors", "--out", ck / "codes.safetensors")
    meta, tensors = read_header(ck / "codes.safetensors")
    assert meta["label_names"] == ["cat", "dog", "owl"] and meta["image"]["channels"] == 3
    # colour images of 16 px: the photos' residual VQ, two codes a position, and a prior with a head per depth
    assert meta["quantizer"] == "rvq" and tensors["train_codes"].shape[1:] == (2, 4, 4)
    run_cli("train-prior", ck / "codes.safetensors", "--out", ck / "prior.safetensors", "--epochs", "1",
            "--batch-size", "4", *TINY_PRIOR)
    assert read_header(ck / "prior.safetensors")[0]["config"]["depth_heads"] is True
    run_cli("sample", ck / "prior.safetensors", "--label", "dog", "--n", "3", "--out", tmp_path / "s",
            "--sampler", "full")
    from PIL import Image

    with Image.open(tmp_path / "s" / "0000.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"


def test_stage_given_another_stages_file_fails_clearly(tiny_pipeline, tmp_path):
    result = run_cli("sample", tiny_pipeline["vqvae"], "--out", tmp_path / "s", ok=False)
    assert result.exit_code == 1
    assert "VQ-VAE checkpoint, but a prior" in result.output
    assert not (tmp_path / "s").exists()
    result = run_cli("extract-codes", tiny_pipeline["prior"], "--out", tmp_path / "c.safetensors", ok=False)
    assert result.exit_code == 1 and "but a VQ-VAE checkpoint is expected" in result.output
    result = run_cli("train-prior", tiny_pipeline["vqvae"], "--out", tmp_path / "p.safetensors", ok=False)
    assert result.exit_code == 1 and "but a code file is expected" in result.output
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_and_help_describe_every_option():
    out = subprocess.run([sys.executable, "-m", "vqgen", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train-vqvae", "extract-codes", "train-prior", "sample"):
        assert command in out
    help_text = run_cli("train-vqvae", "--help").output
    assert "--num-codes" in help_text and "default: 1024" in help_text


def test_the_prior_log_shows_the_histogram_only_baseline(tiny_pipeline):
    from vqgen.formats.files import load_vqgen_file
    from vqgen.measures import histogram_bits_per_code
    from vqgen.logs import read_jsonl

    tensors, meta = load_vqgen_file(tiny_pipeline["codes"], "codes")
    expected = histogram_bits_per_code(tensors["train_codes"], tensors["val_codes"], meta["num_codes"])
    last = read_jsonl(tiny_pipeline["prior"].with_name("prior.metrics.jsonl"))[-1]
    assert last["histogram_bits_per_code"] == pytest.approx(expected)
    assert last["learned_bits_per_code"] == pytest.approx(expected - last["val_bits_per_code"])
