"""`vqgen evaluate` / `train-classifier`: the metrics against independent references, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vqgen.formats.files import load_vqgen_file, read_metadata, save_vqgen_file
from vqgen.cli import app
from vqgen.train.classifier import default_classifier_path
from vqgen.eval.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    kernel_inception_distance,
    mmd2_unbiased,
    ssim_per_image,
)
from vqgen.measures import psnr_per_image

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


# ----------------------------------------------------------------------------- Fréchet distance


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def test_frechet_distance_of_commuting_gaussians_matches_the_closed_form():
    # same eigenvectors: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    q = random_rotation(d, rng)
    for rot in (np.eye(d), q):
        cov1, cov2 = rot @ np.diag(a) @ rot.T, rot @ np.diag(b) @ rot.T
        got = frechet_distance(*(torch.from_numpy(t) for t in (mu1, cov1, mu2, cov2)))
        assert got == pytest.approx(expected, rel=1e-9)


def numpy_frechet(mu1, cov1, mu2, cov2) -> float:
    # the eigenvalues of cov1 @ cov2 (product of PSD matrices) are real and >= 0
    eig = np.linalg.eigvals(cov1 @ cov2)
    trace_sqrt = np.sum(np.sqrt(np.clip(eig.real, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


@pytest.mark.parametrize("rank", [5, 2])  # full rank, and singular (fewer samples than dimensions)
def test_frechet_distance_of_general_gaussians_matches_numpy(rank):
    rng = np.random.default_rng(rank)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    f1, f2 = rng.normal(size=(d, rank)), rng.normal(size=(d, d))
    cov1, cov2 = f1 @ f1.T, f2 @ f2.T
    got = frechet_distance(*(torch.from_numpy(t) for t in (mu1, cov1, mu2, cov2)))
    assert got == pytest.approx(numpy_frechet(mu1, cov1, mu2, cov2), rel=1e-7)


def test_frechet_distance_of_feature_sets_uses_mean_and_unbiased_covariance():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 4)), rng.normal(loc=0.5, scale=2.0, size=(30, 4))
    expected = numpy_frechet(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_features(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-9)
    mu, cov = feature_stats(torch.from_numpy(x))
    assert np.allclose(cov.numpy(), np.cov(x, rowvar=False))
    assert frechet_distance_features(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- KID


def numpy_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_a_unit_that_barely_varies_on_real_images_cannot_outweigh_the_others():
    from vqgen.models.classifier import Classifier, ClassifierConfig

    torch.manual_seed(0)
    net = Classifier(ClassifierConfig(feature_dim=8))
    raw = torch.rand(500, 8) + 1
    raw[:, 3] = 0.0
    raw[0, 3] = 0.01  # one real image moves unit 3 a little: std about 0.0004
    net.set_feature_statistics(raw)
    scale = net.feature_scale()
    median = net.feature_std.median()
    assert torch.equal(scale[[0, 1, 2, 4, 5, 6, 7]], net.feature_std[[0, 1, 2, 4, 5, 6, 7]])  # ordinary units: own std
    assert net.feature_std[3] < 1e-3 and scale[3] == pytest.approx(0.1 * median.item())
    real, spiked = raw[250:], raw[250:].clone()
    spiked[:10, 3] = 1.0  # a few samples fire the silent unit, as generated images can
    standardised = [(x - net.feature_mean) / scale for x in (real, spiked)]
    on_own_std = [(x - net.feature_mean) / net.feature_std for x in (real, spiked)]
    assert standardised[1][:, 3].abs().max() <= 1.0 / (0.1 * median) + 1e-4  # a tenth of the usual spread at most
    bounded = frechet_distance_features(standardised[1], standardised[0])
    assert frechet_distance_features(on_own_std[1], on_own_std[0]) > 1000 * bounded  # what the floor prevents


def test_kid_matches_hand_computed_unbiased_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 3)), rng.normal(loc=1.0, size=(6, 3))
    expected = numpy_unbiased_mmd2(x, y)
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-10)
    # subsets as large as the sets: every subset is the whole set, so the std is 0
    mean, std = kernel_inception_distance(torch.from_numpy(x), torch.from_numpy(y), subsets=5, subset_size=100)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    shifted = torch.randn(400, 8, generator=g) + 0.5
    same, same_std = kernel_inception_distance(x, y, subsets=20, subset_size=200, generator=g)
    apart, _ = kernel_inception_distance(x, shifted, subsets=20, subset_size=200, generator=g)
    assert abs(same) < 3 * same_std + 1e-3
    assert apart > 10 * max(abs(same), same_std)


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_and_ssim_of_identical_images():
    images = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    psnr = psnr_per_image(images, images)
    assert torch.isfinite(psnr).all() and (psnr == 100.0).all()  # capped, not inf
    assert torch.allclose(ssim_per_image(images, images), torch.ones(3), atol=1e-5)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (ssim_per_image(noisy, images) < 0.99).all()
    assert torch.allclose(ssim_per_image(noisy, images), ssim_per_image(images, noisy))


def test_ssim_of_constant_images_matches_the_formula():
    # constant images: zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.7, 0.01**2
    x, y = torch.full((1, 1, 6, 6), a), torch.full((1, 1, 6, 6), b)  # smaller than the 11x11 window
    assert float(ssim_per_image(x, y)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)


# ----------------------------------------------------------------------------- the pipeline on tiny data


def stripes(orientation: str, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    phase = rng.integers(0, 4)
    line = ((np.arange(size) + phase) % 4 < 2).astype(np.float64)
    image = np.tile(line[:, None], (1, size)) if orientation == "h" else np.tile(line[None, :], (size, 1))
    image = 0.2 + 0.6 * image + 0.05 * rng.normal(size=(size, size))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_pngs(folder: Path, arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        Image.fromarray(array, mode="L").save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """Two classes of 8x8 stripe images, and a 1-epoch VQ-VAE, code file, prior and samples on them."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    for orientation in ("h", "v"):
        write_pngs(root / "data" / orientation, [stripes(orientation, rng) for _ in range(40)])
    ck = root / "ck"
    data = root / "data"
    invoke(
        "train-vqvae", "--data", data, "--out", ck / "vqvae.safetensors", "-K", "16", "-D", "8", "--hidden", "16",
        "--res-channels", "8", "--res-blocks", "1", "--downsamples", "1", "--epochs", "1", "--batch-size", "16",
        "--val-fraction", "0.25", "--device", "cpu",
    )
    invoke("extract-codes", ck / "vqvae.safetensors", "--out", ck / "codes.safetensors", "--device", "cpu")
    invoke(
        "train-prior", ck / "codes.safetensors", "--out", ck / "prior.safetensors", "--layers", "2",
        "--channels", "16", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
    )
    invoke(
        "sample", ck / "prior.safetensors", "--n", "8", "--out", root / "samples", "--sampler", "full",
        "--device", "cpu",
    )
    return {"root": root, "data": data, "ck": ck, "samples": root / "samples"}


def all_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in all_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in all_numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_evaluate_cli_reports_every_section_as_json(pipeline):
    ck, out = pipeline["ck"], pipeline["root"] / "eval.json"
    result = invoke(
        "evaluate", "--vqvae", ck / "vqvae.safetensors", "--codes", ck / "codes.safetensors", "--prior",
        ck / "prior.safetensors", "--samples", pipeline["samples"], "--json", out, "--kid-subsets", "10",
        "--device", "cpu", "--train-classifier",
    )
    assert "training one" in result.output  # no cached classifier yet: it says so
    assert "torchvision Inception distances not computed" in result.output
    r = json.loads(out.read_text())
    assert set(r) >= {"reconstruction", "codes", "prior", "samples", "classifier", "torchvision_inception", "num_images"}
    assert set(r["reconstruction"]) >= {
        "mse", "psnr", "ssim", "perplexity", "usage", "fd", "kid_mean", "kid_std", "precision", "recall",
        "floor_precision", "floor_recall",
    }
    assert set(r["prior"]) >= {"nll_nats_per_code", "bits_per_code", "bits_per_dim"}
    assert set(r["samples"]) >= {
        "fd", "kid_mean", "kid_std", "floor_fd", "floor_kid_mean", "confidence", "class_entropy", "class_agreement",
    }
    assert r["torchvision_inception"]["computed"] is False
    numbers = all_numbers({k: r[k] for k in ("reconstruction", "prior", "samples", "classifier")})
    assert numbers and all(math.isfinite(x) for x in numbers)
    assert r["samples"]["count"] == 8 and r["samples"]["floor_count"] == 8  # 8 samples, 20 val images
    assert r["prior"]["num_code_maps"] == r["num_images"] == 20
    assert r["prior"]["bits_per_dim"] == pytest.approx(r["prior"]["bits_per_code"] * 16 / 64)
    assert 0.0 <= r["samples"]["class_agreement"] <= 1.0
    # the classifier is cached beside the checkpoints and reused
    cached = Path(r["classifier"]["path"])
    assert cached.parent == ck and read_metadata(cached)["kind"] == "classifier"
    out2 = pipeline["root"] / "eval2.json"
    again = invoke(
        "evaluate", "--vqvae", ck / "vqvae.safetensors", "--json", out2, "--kid-subsets", "10", "--device", "cpu"
    )
    assert "using" in again.output and "training one" not in again.output
    assert json.loads(out2.read_text())["reconstruction"] == r["reconstruction"]  # same numbers on a rerun


def test_a_damaged_cached_classifier_is_retrained(pipeline, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    vqvae = ck / "vqvae.safetensors"
    vqvae.write_bytes((pipeline["ck"] / "vqvae.safetensors").read_bytes())
    cached = default_classifier_path(ck, read_metadata(vqvae)["dataset"])
    cached.write_bytes(cached_classifier(pipeline).read_bytes())  # same data and split: reused
    first = invoke("evaluate", "--vqvae", vqvae, "--kid-subsets", "2", "--device", "cpu")
    assert "using" in first.output
    cached.write_bytes(b"not a safetensors file")
    second = invoke(
        "evaluate", "--vqvae", ck / "vqvae.safetensors", "--kid-subsets", "2", "--device", "cpu", "--train-classifier"
    )
    assert "does not fit" in second.output and read_metadata(cached)["kind"] == "classifier"


def test_prior_without_code_file_encodes_the_split_with_its_vqvae(pipeline):
    ck, out = pipeline["ck"], pipeline["root"] / "prior_only.json"
    invoke("evaluate", "--prior", ck / "prior.safetensors", "--json", out, "--device", "cpu")
    via_images = json.loads(out.read_text())["prior"]
    invoke("evaluate", "--prior", ck / "prior.safetensors", "--codes", ck / "codes.safetensors", "--json", out)
    via_codes = json.loads(out.read_text())["prior"]
    assert via_images["bits_per_code"] == pytest.approx(via_codes["bits_per_code"], rel=1e-5)


def test_uniform_prior_costs_log2_k_bits_per_code(pipeline):
    ck = pipeline["ck"]
    tensors, meta = load_vqgen_file(ck / "prior.safetensors", "prior")
    head = max(k for k in tensors if k.startswith("head.") and k.endswith(".weight"))  # the last conv
    tensors[head] = torch.zeros_like(tensors[head])
    tensors[head.replace("weight", "bias")] = torch.zeros_like(tensors[head.replace("weight", "bias")])
    uniform = pipeline["root"] / "uniform_prior.safetensors"
    save_vqgen_file(uniform, tensors, meta)
    out = pipeline["root"] / "uniform.json"
    invoke("evaluate", "--prior", uniform, "--codes", ck / "codes.safetensors", "--json", out, "--device", "cpu")
    prior = json.loads(out.read_text())["prior"]
    assert prior["bits_per_code"] == pytest.approx(math.log2(16), rel=1e-6)
    assert prior["nll_nats_per_code"] == pytest.approx(math.log(16), rel=1e-6)
    assert prior["bits_per_dim"] == pytest.approx(math.log2(16) * (4 * 4) / (8 * 8 * 1), rel=1e-6)


def test_real_vs_real_is_far_below_noise_vs_real(pipeline):
    rng = np.random.default_rng(1)
    real_dir, noise_dir = pipeline["root"] / "real_as_samples", pipeline["root"] / "noise"
    # fresh images of the same two classes, and uniform noise, posing as sample folders (no codes.safetensors)
    write_pngs(real_dir, [stripes("hv"[i % 2], rng) for i in range(20)])
    write_pngs(noise_dir, [rng.integers(0, 256, size=(8, 8), dtype=np.uint8) for _ in range(20)])
    scores = {}
    for name, folder in (("real", real_dir), ("noise", noise_dir)):
        out = pipeline["root"] / f"{name}.json"
        invoke(
            "evaluate", "--samples", folder, "--data", pipeline["data"], "--split", "train", "--classifier",
            cached_classifier(pipeline), "--json", out, "--kid-subsets", "20", "--device", "cpu",
        )
        scores[name] = json.loads(out.read_text())["samples"]
    floor, noise, real = scores["real"]["floor_fd"], scores["noise"]["fd"], scores["real"]["fd"]
    assert real < 0.1 * noise and floor < 0.3 * noise
    assert max(scores["real"]["kid_mean"], scores["real"]["floor_kid_mean"]) < 0.2 * scores["noise"]["kid_mean"]
    assert scores["real"]["confidence"] > scores["noise"]["confidence"]


def cached_classifier(pipeline) -> Path:
    path = pipeline["ck"] / "classifier.safetensors"
    if not path.exists():
        invoke("train-classifier", "--data", pipeline["data"], "--val-fraction", "0.25", "--out", path,
               "--epochs", "1", "--min-steps", "60", "--batch-size", "16", "--device", "cpu")
    return path


def test_train_classifier_records_its_data_and_accuracy(pipeline):
    meta = read_metadata(cached_classifier(pipeline))
    assert meta["kind"] == "classifier" and meta["task"] == "labels"
    assert meta["label_names"] == ["h", "v"] and meta["image"] == {"channels": 1, "size": [8, 8], "pixel_range": [0, 1]}
    assert meta["dataset"]["resolved_image_size"] == [8, 8]
    assert meta["val_accuracy"] > 0.9  # stripes are easy


def test_the_classifier_trains_on_shifted_images_and_records_the_shift(pipeline, tmp_path):
    from vqgen.config import ClassifierTrainOptions
    from vqgen.data import load_image_data
    from vqgen.data.augment import draw_shifts, shift_images
    from vqgen.train.classifier import ClassifierTrainer

    data = load_image_data(str(pipeline["data"]), val_fraction=0.25)

    def first_batch(shift: int):
        opts = ClassifierTrainOptions(augment_shift=shift, batch_size=len(data.train), device="cpu")
        batches = ClassifierTrainer(data, opts, torch.device("cpu"), tmp_path / "c.safetensors").train_batches
        batches.set_epoch(3)
        return next(iter(batches))

    (plain, labels), (shifted, shifted_labels) = first_batch(0), first_batch(2)
    assert torch.equal(labels, shifted_labels) and not torch.equal(plain, shifted)
    # the same batch order, each image moved by its (seed, epoch, index) shift; the batch holds every image
    order = torch.as_tensor([int(i) for i in batches_order(data, 3)])
    assert torch.equal(shifted, shift_images(plain, draw_shifts(len(data.train), 2, 0, 3)[order]))
    out = tmp_path / "shifted.safetensors"
    invoke("train-classifier", "--data", pipeline["data"], "--val-fraction", "0.25", "--out", out, "--epochs", "1",
           "--min-steps", "3", "--augment-shift", "1", "--device", "cpu")
    assert read_metadata(out)["train_options"]["augment_shift"] == 1


def batches_order(data, epoch: int) -> list[int]:
    """The shuffled order of the training split in ``epoch`` (one batch of everything, seed 0)."""
    from vqgen.data.batches import make_loader

    batches = make_loader(data.train, len(data.train), shuffle=True, seed=0, drop_last=True)
    batches.set_epoch(epoch)
    return next(iter(batches.sampler))


def test_unlabelled_data_trains_the_self_supervised_task(tmp_path):
    rng = np.random.default_rng(2)
    write_pngs(tmp_path / "flat", [stripes("hv"[i % 2], rng) for i in range(16)])
    out = tmp_path / "cls.safetensors"
    invoke(
        "train-classifier", "--data", tmp_path / "flat", "--out", out, "--epochs", "1", "--min-steps", "3",
        "--device", "cpu",
    )
    meta = read_metadata(out)
    assert meta["task"] == "transforms" and meta["label_names"] is None and len(meta["class_names"]) == 4


def test_evaluate_refuses_bad_input(pipeline, tmp_path):
    nothing = runner.invoke(app, ["evaluate"])
    assert nothing.exit_code == 1 and "nothing to evaluate" in nothing.output
    pickle = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(1)}, pickle)
    bad = runner.invoke(app, ["evaluate", "--samples", str(pipeline["samples"]), "--inception-weights", str(pickle),
                              "--classifier", str(cached_classifier(pipeline)), "--device", "cpu"])
    assert bad.exit_code == 1 and "pickle" in bad.output


def test_inception_features_load_from_safetensors(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from vqgen.eval.features import inception_feature_net

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    features = inception_feature_net(path, torch.device("cpu"))(torch.rand(2, 1, 8, 8))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


# ----------------------------------------------------------------------------- no classifier trained unasked


def copy_vqvae(pipeline, folder: Path) -> Path:
    folder.mkdir()
    vqvae = folder / "vqvae.safetensors"
    vqvae.write_bytes((pipeline["ck"] / "vqvae.safetensors").read_bytes())
    return vqvae


def test_a_missing_classifier_is_an_error_naming_the_command_and_nothing_is_written(pipeline, tmp_path):
    import shlex

    vqvae = copy_vqvae(pipeline, tmp_path / "ck")
    cached = default_classifier_path(vqvae.parent, read_metadata(vqvae)["dataset"])
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", "--vqvae", str(vqvae), "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--train-classifier" in lines[0], result.output
    command = lines[0].split("`")[1]
    assert command.startswith("vqgen train-classifier --data ") and command.endswith(f"--out {cached}")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ck", "vqvae.safetensors"]  # no classifier, no JSON
    # the command it names trains a classifier that evaluate then takes as it is (a short run here)
    invoke(*shlex.split(command)[1:], "--epochs", "1", "--min-steps", "5", "--device", "cpu")
    used = invoke("evaluate", "--vqvae", vqvae, "--json", out, "--kid-subsets", "2", "--device", "cpu")
    assert "using" in used.output and json.loads(out.read_text())["classifier"]["trained_now"] is False


def test_train_classifier_flag_trains_and_caches_a_missing_or_unfitting_classifier(pipeline, tmp_path):
    vqvae = copy_vqvae(pipeline, tmp_path / "ck")
    cached = default_classifier_path(vqvae.parent, read_metadata(vqvae)["dataset"])
    cached.write_bytes(b"not a safetensors file")
    refused = runner.invoke(app, ["evaluate", "--vqvae", str(vqvae), "--device", "cpu"])
    assert refused.exit_code == 1 and "does not fit" in refused.output and "--train-classifier" in refused.output
    assert cached.read_bytes() == b"not a safetensors file"  # left as it was
    out = tmp_path / "eval.json"
    invoke("evaluate", "--vqvae", vqvae, "--json", out, "--kid-subsets", "2", "--device", "cpu", "--train-classifier")
    assert json.loads(out.read_text())["classifier"]["trained_now"] is True
    assert read_metadata(cached)["kind"] == "classifier"
    explicit = tmp_path / "mine.safetensors"  # an explicit --classifier that is missing is trained there
    invoke("evaluate", "--vqvae", vqvae, "--classifier", explicit, "--kid-subsets", "2", "--device", "cpu",
           "--train-classifier")
    assert read_metadata(explicit)["kind"] == "classifier"


# ----------------------------------------------------------------------------- precision/recall, histogram baseline


def test_samples_report_precision_recall_and_the_prior_its_histogram_baseline(pipeline):
    from vqgen.measures import histogram_bits_per_code

    ck, out = pipeline["ck"], pipeline["root"] / "pr.json"
    result = invoke(
        "evaluate", "--codes", ck / "codes.safetensors", "--prior", ck / "prior.safetensors", "--samples",
        pipeline["samples"], "--classifier", cached_classifier(pipeline), "--json", out, "--kid-subsets", "5",
        "--device", "cpu",
    )
    assert "precision" in result.output and "recall" in result.output and "learned structure" in result.output
    r = json.loads(out.read_text())
    s, p = r["samples"], r["prior"]
    for key in ("precision", "recall", "floor_precision", "floor_recall"):
        assert 0.0 <= s[key] <= 1.0
    assert s["pr_neighbours"] == 3
    tensors, _ = load_vqgen_file(ck / "codes.safetensors", "codes")
    expected = histogram_bits_per_code(tensors["train_codes"], tensors["val_codes"], 16)
    assert p["histogram_bits_per_code"] == pytest.approx(expected, rel=1e-12)
    assert p["learned_structure_bits_per_code"] == pytest.approx(expected - p["bits_per_code"], rel=1e-9)


def test_every_sample_of_a_large_folder_is_used(pipeline, tmp_path):
    rng = np.random.default_rng(5)
    write_pngs(tmp_path / "many", [stripes("hv"[i % 2], rng) for i in range(1003)])
    out = tmp_path / "many.json"
    invoke(
        "evaluate", "--samples", tmp_path / "many", "--data", pipeline["data"], "--split", "train", "--classifier",
        cached_classifier(pipeline), "--json", out, "--kid-subsets", "2", "--device", "cpu",
    )
    s = json.loads(out.read_text())["samples"]
    assert s["count"] == 1003 and s["precision"] > 0.5  # all of them, and they look like the real stripes


def test_the_torchvision_inception_numbers_are_not_called_fid_and_old_results_still_read():
    from vqgen.eval.report import results_table, with_current_keys

    assert "published" in invoke("evaluate", "--help").output  # --inception-weights says what it is not
    old = {"split": "val", "standard_fid": {"computed": False, "reason": "no weights"},
           "samples": {"fid_inception": 1.5, "floor_fid_inception": 0.5, "kid_inception_mean": 0.1}}
    new = with_current_keys(old)
    assert new["torchvision_inception"] == old["standard_fid"]
    assert new["samples"] == {"fd_torchvision_inception": 1.5, "floor_fd_torchvision_inception": 0.5,
                              "kid_torchvision_inception_mean": 0.1}
    assert with_current_keys(new) == new
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(results_table({"split": "val", "standard_fid": old["standard_fid"]}))  # an old file still renders
    assert "tv Inception FD" in console.file.getvalue()
