"""The data package: today's mnist5k split kept, validation carved out of training data, the split's
own seed, folder digests, one grey rule for every source, and the test and all splits."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_VQVAE, run_cli, write_image_folder
from vqgen.formats.files import load_vqgen_file
from vqgen.data import ImageFolder, image_data_from_spec, load_image_data, sources
from vqgen.errors import VQGenError
from vqgen.eval import EvaluateRequest, evaluate
from vqgen.stages.extract_codes import extract_codes

# Regression pin, computed with vqgen/data.py as it was before the data package (commit 1bfbcf2):
# sha256 of json.dumps(indices) of the default mnist5k split, and of the float32 bytes of every image
# of each split stacked in order. Seeded trainings repeat only while these stay the same.
MNIST5K_TRAIN_INDICES = "f794c451f762fae52dab5681ebd7b3544ca4f00da526d29f874a7f23837b2b27"
MNIST5K_VAL_INDICES = "f265415347d193e233b1ed11c7468439c283168d83c65d3935d1d3a0d1bba3ea"
MNIST5K_TRAIN_PIXELS = "340ec554968e74df2eacfd3bda11dc542856174ad1568124326e99053610fa0b"
MNIST5K_VAL_PIXELS = "7ff256ee8e1808e074937c313cb9a3b7864b981963b1001321ab4878a7a8fd7d"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_torchvision(train: np.ndarray, test: np.ndarray, train_targets, test_targets, classes):
    """A stand-in for a torchvision dataset class (``cls(root, train=..., download=...)``): no network."""

    class Fake:
        def __init__(self, root: str, train: bool, download: bool):
            self.data = arrays[train]
            self.targets = list(targets[train])
            self.classes = list(classes)

    arrays, targets = {True: train, False: test}, {True: train_targets, False: test_targets}
    return Fake


@pytest.fixture
def fake_mnist(monkeypatch):
    """40 training and 10 test 28x28 grey images; pixel (0, 0) tells them apart: i for train, 100 + i for test."""
    rng = np.random.default_rng(0)
    train, test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (40, 10))
    train[:, 0, 0], test[:, 0, 0] = np.arange(40), 100 + np.arange(10)
    fake = fake_torchvision(train, test, np.arange(40) % 10, np.arange(10) % 10, [str(d) for d in range(10)])
    monkeypatch.setattr(sources, "torchvision_class", lambda name: fake)
    return fake


def marker(image: torch.Tensor) -> int:
    return round(float(image[0, 0, 0]) * 255)


# ----------------------------------------------------------------------------- today's split


def test_default_mnist5k_split_and_pixels_are_unchanged():
    data = load_image_data()
    assert sha256(json.dumps(list(data.train.indices)).encode()) == MNIST5K_TRAIN_INDICES
    assert sha256(json.dumps(list(data.val.indices)).encode()) == MNIST5K_VAL_INDICES
    for split, expected in ((data.train, MNIST5K_TRAIN_PIXELS), (data.val, MNIST5K_VAL_PIXELS)):
        pixels = torch.stack([split[i][0] for i in range(len(split))])
        assert pixels.dtype == torch.float32 and sha256(pixels.numpy().tobytes()) == expected
    assert data.spec["split_seed"] == 0 and data.test is None and len(data.all) == 5000


# ----------------------------------------------------------------------------- torchvision: val from train


def test_torchvision_validation_is_carved_from_the_training_split_and_test_is_kept(fake_mnist, tmp_path):
    data = load_image_data("mnist", root=tmp_path, val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    train, val = [marker(data.train[i][0]) for i in range(30)], [marker(data.val[i][0]) for i in range(10)]
    assert sorted(train + val) == list(range(40))  # both from the 40 training images, disjoint
    assert [marker(data.test[i][0]) for i in range(10)] == list(range(100, 110))
    assert data.pick("test") is data.test and len(data.pick("all")) == 50
    assert data.spec["num_test"] == 10 and "split" not in data.spec
    rebuilt = image_data_from_spec(data.spec, root=tmp_path)
    assert rebuilt.val.indices == data.val.indices


def test_an_older_spec_with_the_official_split_is_rebuilt_as_it_was(fake_mnist, tmp_path):
    spec = {"data": "mnist", "image_size": None, "channels": None, "split_seed": 0, "val_fraction": 0.1,
            "split": "official train/test"}  # what vqgen wrote before validation was carved from train
    data = image_data_from_spec(spec, root=tmp_path)
    assert len(data.train) == 40 and [marker(data.val[i][0]) for i in range(10)] == list(range(100, 110))


# ----------------------------------------------------------------------------- split seed


def test_the_split_has_its_own_seed_recorded_in_the_spec():
    a, b = load_image_data(split_seed=0), load_image_data(split_seed=1)
    assert a.val.indices != b.val.indices and (a.spec["split_seed"], b.spec["split_seed"]) == (0, 1)
    assert a.spec["contents"]["split_sha256"] != b.spec["contents"]["split_sha256"]
    assert image_data_from_spec(b.spec).val.indices == b.val.indices


# ----------------------------------------------------------------------------- folder digests


def test_a_folder_changed_since_training_is_refused(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=24)
    spec = load_image_data(str(folder)).spec
    assert spec["contents"]["num_files"] == 48 and len(spec["contents"]["files_sha256"]) == 64
    assert image_data_from_spec(spec).val.indices == load_image_data(str(folder)).val.indices  # unchanged: loads

    for i in range(3):
        shutil.copy(folder / "a" / "00.png", folder / "b" / f"new{i}.png")
    with pytest.raises(VQGenError, match=r"imgs: 3 files added since the VQ-VAE was trained \(recorded 48 files, found 51\)"):
        image_data_from_spec(spec)
    for i in range(3):
        (folder / "b" / f"new{i}.png").unlink()
    (folder / "a" / "00.png").rename(folder / "a" / "zz.png")
    with pytest.raises(VQGenError, match="files renamed, moved or replaced"):
        image_data_from_spec(spec)
    (folder / "a" / "zz.png").unlink()
    with pytest.raises(VQGenError, match=r"1 file removed .* \(recorded 48 files, found 47\)"):
        image_data_from_spec(spec)

    other = write_image_folder(tmp_path / "other", n_per_class=5)
    assert len(image_data_from_spec({**spec, "data": str(other)}).all) == 10  # other data (--data): not compared
    old = {k: v for k, v in spec.items() if k != "contents"}  # older vqgen: no digest, loads unchecked
    assert len(image_data_from_spec(old).all) == 47


def test_extract_codes_refuses_a_folder_that_changed_since_training(image_folder, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    vqvae = tmp_path / "vq.safetensors"
    run_cli("train-vqvae", "--data", folder, "--out", vqvae, "--epochs", "1", "--batch-size", "16", "--device", "cpu",
            *TINY_VQVAE)
    for i in range(3):
        shutil.copy(folder / "a" / "00.png", folder / "a" / f"new{i}.png")
    codes = tmp_path / "codes.safetensors"
    result = run_cli("extract-codes", vqvae, "--out", codes, "--device", "cpu", ok=False)
    assert result.exit_code == 1 and not codes.exists()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {folder}: 3 files added since the VQ-VAE was trained (recorded 48 files, found 51); "
                      "restore it, or retrain on the data as it is now"]


# ----------------------------------------------------------------------------- one grey rule


def test_colour_to_grey_is_the_same_luma_for_tensor_and_folder_sources(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.choice([0, 60, 255], size=(12, 8, 8, 3)).astype(np.uint8)  # saturated: mean and luma differ
    fake = fake_torchvision(colour, colour[:2], [0] * 12, [0] * 2, ["x"])
    monkeypatch.setattr(sources, "torchvision_class", lambda name: fake)
    folder = tmp_path / "colour"
    folder.mkdir()
    for i, image in enumerate(colour):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    from_tensors = load_image_data("cifar10", channels=1, root=tmp_path)
    from_files = load_image_data(str(folder), channels=1)
    assert from_tensors.val.indices == from_files.val.indices  # one label each way: the same split
    luma = torch.from_numpy(colour.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255)
    for data in (from_tensors, from_files):
        grey = torch.stack([data.all[i][0] for i in range(12)])
        assert grey.shape == (12, 1, 8, 8)
        assert (grey[:, 0].double() - luma).abs().max() <= 1 / 255
    a, b = (torch.stack([d.val[i][0] for i in range(len(d.val))]) for d in (from_tensors, from_files))
    assert (a - b).abs().max() <= 1 / 255


# ----------------------------------------------------------------------------- test and all splits


def test_split_all_is_every_file_in_sorted_order_and_a_folder_has_no_test_split(image_folder):
    data = load_image_data(str(image_folder))
    everything = data.pick("all")
    assert isinstance(everything, ImageFolder)
    assert everything.files == sorted(image_folder.rglob("*.png")) and len(everything) == 48
    assert sorted(data.train.indices + data.val.indices) == list(range(48))
    with pytest.raises(VQGenError, match="--split test: .* has no test split"):
        data.pick("test")
    with pytest.raises(VQGenError, match="--split must be one of train, val, test, all, not 'tset'"):
        data.pick("tset")


def test_codes_and_evaluation_of_the_test_and_all_splits(fake_mnist, tiny_pipeline, tmp_path):
    data = load_image_data("mnist", root=tmp_path, val_fraction=0.25)
    codes = tmp_path / "codes.safetensors"
    meta = extract_codes(tiny_pipeline["vqvae"], data, codes, device="cpu")
    tensors, _ = load_vqgen_file(codes, "codes")
    assert (meta["augment"]["num_train_images"], meta["num_val"], meta["num_test"]) == (30, 10, 10)
    assert meta["num_train"] == 30 * (1 + meta["augment"]["augment_copies"])  # and the shifted copies
    assert tensors["test_labels"].tolist() == list(range(10)) and set(meta["codebook_audit"]) == {"train", "val", "test"}

    on_test = evaluate(EvaluateRequest(codes=codes, prior=tiny_pipeline["prior"], split="test", device="cpu"))
    assert on_test["prior"]["num_code_maps"] == 10 and on_test["codes"] == meta["codebook_audit"]["test"]
    with pytest.raises(VQGenError, match="holds no all codes"):
        evaluate(EvaluateRequest(codes=codes, prior=tiny_pipeline["prior"], split="all", device="cpu"))
    on_all = evaluate(EvaluateRequest(prior=tiny_pipeline["prior"], data="mnist", data_root=tmp_path, split="all",
                                      device="cpu"))
    assert on_all["prior"]["num_code_maps"] == 50 and on_all["num_images"] == 50


def test_the_split_has_its_own_seed_so_seed_sweeps_share_one_validation_set(image_folder, tmp_path):
    from conftest import TINY_VQVAE, run_cli

    from vqgen.formats.files import read_metadata

    for seed in (0, 1):
        run_cli("train-vqvae", "--data", image_folder, "--seed", seed, "--out", tmp_path / f"{seed}.safetensors",
                "--epochs", "1", "--device", "cpu", *TINY_VQVAE)
    a, b = (read_metadata(tmp_path / f"{s}.safetensors")["dataset"] for s in (0, 1))
    assert a["split_seed"] == b["split_seed"] == 0 and a["contents"]["split_sha256"] == b["contents"]["split_sha256"]
    run_cli("train-vqvae", "--data", image_folder, "--split-seed", 5, "--out", tmp_path / "s5.safetensors",
            "--epochs", "1", "--device", "cpu", *TINY_VQVAE)
    moved = read_metadata(tmp_path / "s5.safetensors")["dataset"]
    assert moved["split_seed"] == 5 and moved["contents"]["split_sha256"] != a["contents"]["split_sha256"]


def test_an_image_folder_decodes_each_file_once_while_its_images_fit_the_cache(tmp_path):
    root = write_image_folder(tmp_path / "images", n_per_class=2, size=20, rgb=True)
    files = sorted(root.rglob("*.png"))
    one_image = 3 * 16 * 16 * 4  # fitted to 16x16, float32
    uncached = ImageFolder(files, [0, 0, 1, 1], (16, 16), 3, cache_bytes=0)
    expected = [uncached[i][0] for i in range(4)]
    folder = ImageFolder(files, [0, 0, 1, 1], (16, 16), 3, cache_bytes=3 * one_image)
    first = [folder[i][0] for i in range(4)]
    assert all(torch.equal(image, e) for image, e in zip(first, expected))
    first[0].zero_()  # what a caller does to its copy does not reach the cache
    for path in files:
        path.unlink()
    again = [folder[i] for i in range(3)]  # the three that fit are read from memory
    assert all(torch.equal(image, e) for (image, _), e in zip(again, expected))
    assert [label for _, label in again] == [0, 0, 1]
    with pytest.raises(VQGenError, match=files[3].name):  # the fourth did not fit: decoded on every access
        folder[3]
