import os
from pathlib import Path

# tiny models on a 2-core machine: one thread each (also for the subprocesses tests start) avoids
# oversubscription, which makes them many times slower, not faster
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqgen.formats.files import save_vqgen_file
from vqgen.cli import app

# a VQ-VAE small enough to train for an epoch on mnist5k in a few seconds
TINY_VQVAE = ["--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "-K", "32", "-D", "8"]
TINY_PRIOR = ["--layers", "3", "--channels", "8", "--kernel-size", "3"]
TINY_TRANSFORMER = ["--arch", "transformer", "--layers", "2", "--channels", "16", "--heads", "2"]


torch.set_num_threads(1)


def run_cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok and result.exit_code != 0:
        raise AssertionError(f"vqgen {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}")
    return result


def train_guided_prior(codes: Path, out: Path, *size: str) -> Path:
    """A one-epoch prior of ``size`` (PixelCNN or transformer flags) with label dropout, so it can be guided."""
    run_cli("train-prior", codes, "--out", out, "--epochs", "1", "--label-dropout", "0.3", "--device", "cpu", *size)
    return out


def write_image_folder(root: Path, n_per_class: int = 6, size: int = 16, classes=("a", "b"), rgb=False) -> Path:
    """Small labelled folder dataset of procedural images (bright squares at class-dependent spots)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 40, (size, size, 3 if rgb else 1), dtype=np.uint8)
            top = 2 + (c * 5 + i) % (size - 6)
            img[top : top + 4, 3 : 3 + 4 + c] = 230
            array = img if rgb else img[:, :, 0]
            Image.fromarray(array).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """48 labelled 16x16 grey images (two classes)."""
    return write_image_folder(tmp_path_factory.mktemp("images"), n_per_class=24)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> dict[str, Path]:
    """Train a tiny VQ-VAE and prior on mnist5k once for every test that needs trained files."""
    root = tmp_path_factory.mktemp("pipeline")
    paths = {k: root / f"{k}.safetensors" for k in ("vqvae", "codes", "prior")}
    run_cli("train-vqvae", "--epochs", "1", "--out", paths["vqvae"], "--device", "cpu", *TINY_VQVAE)
    run_cli("extract-codes", paths["vqvae"], "--out", paths["codes"], "--device", "cpu")
    run_cli("train-prior", paths["codes"], "--out", paths["prior"], "--epochs", "1", "--device", "cpu", *TINY_PRIOR)
    return paths


@pytest.fixture(scope="module")
def code_file(tmp_path_factory) -> Path:
    """A labelled code file (40 train / 8 val maps of 4x4, K=16), written directly."""
    path = tmp_path_factory.mktemp("codes") / "codes.safetensors"
    g = torch.Generator().manual_seed(0)
    tensors = {
        "train_codes": torch.randint(16, (40, 4, 4), generator=g, dtype=torch.int16),
        "train_labels": torch.arange(40) % 2,
        "val_codes": torch.randint(16, (8, 4, 4), generator=g, dtype=torch.int16),
        "val_labels": torch.arange(8) % 2,
    }
    meta = {
        "kind": "codes", "num_codes": 16, "latent_shape": [4, 4], "label_names": ["a", "b"],
        "vqvae_sha256": "0" * 64, "vqvae_path": "vqvae.safetensors", "dataset": {"data": "test"},
        "image": {"channels": 1, "size": [16, 16]}, "num_train": 40, "num_val": 8,
    }
    save_vqgen_file(path, tensors, meta)
    return path
