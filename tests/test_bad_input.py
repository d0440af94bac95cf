"""Bad input: one clear error line on stderr, a non-zero exit, and nothing written (no file, temp file or folder)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from vqgen.formats.files import load_vqgen_file, read_metadata, save_vqgen_file
from vqgen.cli import app
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.train.resume import resume_path

TINY_VQVAE = "--hidden 16 --res-channels 8 -K 16 -D 8 --epochs 1 --batch-size 8 --val-fraction 0.25 --device cpu".split()
TINY_PRIOR = "--layers 1 --channels 8 --kernel-size 3 --epochs 1 --batch-size 4 --device cpu".split()


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def tree(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fails(workspace: Path, *args, expect: tuple[str, ...]) -> str:
    """Run a command that must fail: one error line containing ``expect``, no traceback, nothing new in ``workspace``."""
    before = tree(workspace)
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in expect:
        assert fragment in errors[0], (fragment, errors[0])
    assert tree(workspace) == before, "something was written"
    return errors[0]


def save_images(folder: Path, count: int, size: tuple[int, int] = (16, 16), mode: str = "L", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    for i in range(count):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny labelled pipeline: VQ-VAE, codes, conditional and unconditional priors, plus look-alike VQ-VAEs."""
    root = tmp_path_factory.mktemp("pipeline")
    for label in ("a", "b"):
        save_images(root / "images" / label, 12, seed=len(label) + ord(label))
    files = {name: root / f"{name}.safetensors" for name in ("vqvae", "codes", "prior", "uncond")}
    assert invoke("train-vqvae", "--data", root / "images", "--out", files["vqvae"], *TINY_VQVAE).exit_code == 0
    assert invoke("extract-codes", files["vqvae"], "--out", files["codes"], "--device", "cpu").exit_code == 0
    assert invoke("train-prior", files["codes"], "--out", files["prior"], *TINY_PRIOR, "--label-dropout", "0").exit_code == 0
    assert invoke("train-prior", files["codes"], "--out", files["uncond"], "--unconditional", *TINY_PRIOR).exit_code == 0
    files["masked"] = root / "masked.safetensors"
    masked = ["--arch", "masked", "--layers", "1", "--channels", "8", "--heads", "2", *TINY_PRIOR[6:]]
    assert invoke("train-prior", files["codes"], "--out", files["masked"], *masked).exit_code == 0
    files["image"] = root / "images" / "a" / "00.png"

    # same architecture, other weights (another sha256); and one with K=8
    _, meta = load_vqgen_file(files["vqvae"], "vqvae")
    for name, k in (("other_vqvae", 16), ("vqvae_k8", 8)):
        torch.manual_seed(1)
        model = VQVAE(VQVAEConfig.from_dict({**meta["config"], "num_codes": k}))
        files[name] = root / f"{name}.safetensors"
        save_vqgen_file(files[name], model.state_dict(), {**meta, "config": model.cfg.to_dict()})
    # a code file with K=8
    tensors, meta = load_vqgen_file(files["codes"], "codes")
    tensors = {k: (v % 8 if "codes" in k else v) for k, v in tensors.items()}
    files["codes_k8"] = root / "codes_k8.safetensors"
    save_vqgen_file(files["codes_k8"], tensors, {**meta, "num_codes": 8})
    return files


@pytest.fixture
def ws(tmp_path) -> Path:
    """An empty workspace; outputs go to ws/out (which must never appear when a command fails)."""
    return tmp_path


# ----------------------------------------------------------------------------- data folders


def test_missing_paths(ws, trained):
    out = ws / "out"
    fails(ws, "train-vqvae", "--data", ws / "nope", "--out", out / "vq.safetensors", *TINY_VQVAE,
          expect=("nope: no such folder",))
    fails(ws, "extract-codes", ws / "nope.safetensors", "--out", out / "c.safetensors", expect=("nope.safetensors: no such file",))
    fails(ws, "train-prior", ws / "nope.safetensors", "--out", out / "p.safetensors", expect=("no such file",))
    fails(ws, "sample", ws / "nope.safetensors", "--out", out, expect=("nope.safetensors: no such file",))
    fails(ws, "sample", trained["prior"], "--vqvae", ws / "gone.safetensors", "--out", out, expect=("gone.safetensors: no such file",))


def test_empty_folder_and_folder_without_images(ws):
    (ws / "empty").mkdir()
    fails(ws, "train-vqvae", "--data", ws / "empty", "--out", ws / "out" / "vq.safetensors", expect=("empty: no images found",))
    (ws / "docs").mkdir()
    (ws / "docs" / "notes.txt").write_text("hello")
    fails(ws, "train-vqvae", "--data", ws / "docs", "--out", ws / "out" / "vq.safetensors",
          expect=("docs: no images found (only 1 other files, e.g. notes.txt)",))


@pytest.mark.parametrize("bad", ["truncated", "text"])
def test_an_undecodable_image_is_named(ws, bad):
    save_images(ws / "images", 8)
    broken = ws / "images" / "broken.png"
    if bad == "truncated":
        data = (ws / "images" / "00.png").read_bytes()
        broken.write_bytes(data[: len(data) // 2])
    else:
        broken.write_text("not an image, despite the name")  # an image extension on another kind of file
    fails(ws, "train-vqvae", "--data", ws / "images", "--out", ws / "out" / "vq.safetensors", *TINY_VQVAE,
          expect=(f"{broken}: cannot decode image", "--skip-bad-images"))


def test_skip_bad_images_warns_with_a_count_and_other_files_are_ignored_with_a_note(ws):
    save_images(ws / "images", 24)
    data = (ws / "images" / "00.png").read_bytes()
    (ws / "images" / "broken.png").write_bytes(data[:40])
    (ws / "images" / "README.txt").write_text("about these images")
    (ws / "images" / ".hidden.png").write_text("hidden files are skipped, not decoded")
    out = ws / "out" / "vq.safetensors"
    result = invoke("train-vqvae", "--data", ws / "images", "--out", out, "--skip-bad-images", *TINY_VQVAE)
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image file(s) of 25" in result.stderr and "broken.png" in result.stderr
    assert "ignored 1 file(s) without an image extension (e.g. README.txt)" in result.stderr
    assert read_metadata(out)["dataset"]["num_files"] == 24


def test_mixed_sizes_need_image_size(ws):
    save_images(ws / "images", 4)
    Image.new("L", (20, 20)).save(ws / "images" / "99.png")
    fails(ws, "train-vqvae", "--data", ws / "images", "--out", ws / "out" / "vq.safetensors", *TINY_VQVAE,
          expect=("images have different sizes (00.png is 16x16, 99.png is 20x20)", "--image-size"))


def test_image_size_not_divisible_by_the_downsampling_factor(ws):
    save_images(ws / "images", 8, size=(18, 18))
    fails(ws, "train-vqvae", "--data", ws / "images", "--out", ws / "out" / "vq.safetensors", *TINY_VQVAE,
          expect=("image size 18x18 is not divisible by the downsampling factor 4",))
    fails(ws, "train-vqvae", "--data", ws / "images", "--image-size", "20", "--downsamples", "3", "--out",
          ws / "out" / "vq.safetensors", *TINY_VQVAE, expect=("20x20 is not divisible by the downsampling factor 8",))


def test_channels(ws, trained):
    save_images(ws / "images", 8)
    fails(ws, "train-vqvae", "--data", ws / "images", "--channels", "2", "--out", ws / "out" / "vq.safetensors",
          expect=("--channels must be 1 or 3, not 2",))
    # RGB images for a grey VQ-VAE: converted (with a warning), since the VQ-VAE fixes the channel count
    save_images(ws / "rgb", 8, mode="RGB")
    codes = ws / "out" / "codes.safetensors"
    result = invoke("extract-codes", trained["vqvae"], "--data", ws / "rgb", "--out", codes, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "converting 3-channel images to 1 channel" in result.stderr
    meta = read_metadata(codes)
    assert meta["augment"]["num_train_images"] + meta["num_val"] == 8 and meta["dataset"]["resolved_channels"] == 1


# ----------------------------------------------------------------------------- wrong files


class Trap:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_foreign_files_are_refused_and_never_unpickled(ws, trained):
    marker = ws / "UNPICKLED"
    pickled = ws / "model.pt"
    pickled.write_bytes(pickle.dumps({"state": Trap(marker)}, protocol=4))
    torch_saved = ws / "torch.pt"
    torch.save({"w": torch.zeros(2)}, torch_saved)
    plain = ws / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    text = ws / "notes.safetensors"
    text.write_text("just some text, long enough to look like a header")
    empty = ws / "empty.safetensors"
    empty.touch()

    out = ws / "out"
    for path in (pickled, torch_saved):
        fails(ws, "extract-codes", path, "--out", out / "c.safetensors", expect=(f"{path}: looks like a pickle", "never unpickles"))
        fails(ws, "sample", path, "--out", out, expect=("never unpickles",))
        fails(ws, "train-prior", path, "--out", out / "p.safetensors", expect=("never unpickles",))
    fails(ws, "sample", trained["prior"], "--vqvae", pickled, "--out", out, expect=("never unpickles",))
    fails(ws, "extract-codes", plain, "--out", out / "c.safetensors",
          expect=("plain.safetensors: a safetensors file, but not one written by vqgen",))
    fails(ws, "extract-codes", text, "--out", out / "c.safetensors", expect=("not a safetensors file",))
    fails(ws, "extract-codes", empty, "--out", out / "c.safetensors", expect=("the file is empty",))
    assert not marker.exists()


def test_a_checkpoint_of_the_wrong_kind(ws, trained):
    out = ws / "out"
    fails(ws, "extract-codes", trained["prior"], "--out", out / "c.safetensors",
          expect=("this is a prior (PixelCNN) checkpoint, but a VQ-VAE checkpoint is expected here",))
    fails(ws, "sample", trained["vqvae"], "--out", out,
          expect=("this is a VQ-VAE checkpoint, but a prior (PixelCNN, transformer or masked) checkpoint is expected here",))
    fails(ws, "sample", trained["prior"], "--vqvae", trained["uncond"], "--out", out,
          expect=("uncond.safetensors: this is a prior (PixelCNN) checkpoint, but a VQ-VAE checkpoint is expected",))
    fails(ws, "train-prior", trained["vqvae"], "--out", out / "p.safetensors",
          expect=("this is a VQ-VAE checkpoint, but a code file is expected here",))
    fails(ws, "train-prior", resume_path(trained["prior"]), "--out", out / "p.safetensors",
          expect=("this is a resumable training state, but a code file is expected here",))


def test_a_vqvae_other_than_the_priors_is_refused_unless_allowed(ws, trained):
    out = ws / "out"
    fails(ws, "sample", trained["prior"], "--vqvae", trained["other_vqvae"], "--n", 2, "--out", out,
          expect=("other_vqvae.safetensors: not the VQ-VAE whose codes trained", "--allow-vqvae-mismatch"))
    result = invoke("sample", trained["prior"], "--vqvae", trained["other_vqvae"], "--allow-vqvae-mismatch",
                    "--n", 2, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "grid.png").is_file() and (out / "codes.safetensors").is_file()


def test_k_mismatch_between_codes_vqvae_and_prior(ws, trained):
    for allow in ((), ("--allow-vqvae-mismatch",)):
        fails(ws, "sample", trained["prior"], "--vqvae", trained["vqvae_k8"], *allow, "--out", ws / "out",
              expect=("vqvae_k8.safetensors: has K=8 codes, but the prior", "models K=16"))
    # continuing the prior's training on codes with another K
    shutil.copy(trained["prior"], ws / "prior.safetensors")
    shutil.copy(resume_path(trained["prior"]), resume_path(ws / "prior.safetensors"))
    fails(ws, "train-prior", trained["codes_k8"], "--out", ws / "prior.safetensors", *TINY_PRIOR, "--resume", "auto",
          expect=("cannot resume", "num_codes (saved 16, now 8)"))


def test_labels(ws, trained):
    out = ws / "out"
    fails(ws, "sample", trained["prior"], "--label", "7", "--out", out, expect=("--label '7' is not one of the prior's classes (0..1: a, b)",))
    fails(ws, "sample", trained["prior"], "--label", "a,zebra", "--out", out, expect=("--label 'zebra'",))
    fails(ws, "sample", trained["uncond"], "--label", "0", "--out", out, expect=("--label was given, but this prior is unconditional",))


def test_edit(ws, trained):
    out, image, masked = ws / "out", trained["image"], trained["masked"]
    fails(ws, "edit", ws / "nope.png", "--box", "0,0,8,8", "--prior", masked, "--out", out,
          expect=("nope.png: no such image file",))
    fails(ws, "edit", image, "--box", "0,0,17,8", "--prior", masked, "--out", out,
          expect=("--box 0,0,17,8 is not inside the 16x16 image",))
    fails(ws, "edit", image, "--box", "4,4,4,8", "--prior", masked, "--out", out, expect=("--box 4,4,4,8 is empty",))
    fails(ws, "edit", image, "--box", "1,2,3", "--prior", masked, "--out", out,
          expect=("--box must be four whole numbers x0,y0,x1,y1",))
    fails(ws, "edit", image, "--box", "0,0,8,8", "--prior", trained["prior"], "--out", out,
          expect=("edit needs a masked prior (train-prior --arch masked); a pixelcnn prior draws codes in raster order",))
    fails(ws, "edit", image, "--box", "0,0,8,8", "--prior", masked, "--guidance", "2", "--out", out,
          expect=("--guidance needs --label",))
    fails(ws, "edit", image, "--box", "0,0,8,8", "--prior", masked, "--label", "zebra", "--out", out,
          expect=("--label 'zebra' is not one of the prior's classes",))


# ----------------------------------------------------------------------------- outputs and options


def test_output_folder_that_cannot_be_written(ws, trained):
    blocker = ws / "blocker"
    blocker.write_text("a regular file where a folder would have to be")
    images = trained["vqvae"].parent / "images"
    expect = ("cannot write here", "blocker is not a folder")
    fails(ws, "train-vqvae", "--data", images, "--out", blocker / "vq.safetensors", *TINY_VQVAE, expect=expect)
    fails(ws, "extract-codes", trained["vqvae"], "--out", blocker / "sub" / "codes.safetensors", expect=expect)
    fails(ws, "train-prior", trained["codes"], "--out", blocker / "prior.safetensors", *TINY_PRIOR, expect=expect)
    fails(ws, "sample", trained["prior"], "--out", blocker / "samples", expect=expect)
    fails(ws, "sample", trained["prior"], "--out", blocker, expect=("blocker: cannot write here (not a folder)",))
    (ws / "taken").mkdir()
    fails(ws, "train-prior", trained["codes"], "--out", ws / "taken", *TINY_PRIOR, expect=("taken: cannot write here (a folder is in the way)",))


UNWRITABLE = "/proc/nope/x"  # /proc exists and root passes its permission bits, but nothing can be created in it


@pytest.mark.parametrize(
    "command",
    [
        "train-vqvae", "extract-codes", "train-prior", "sample", "reconstruct", "interpolate", "codebook", "curves",
        "train-classifier", "evaluate",
    ],
)  # fmt: skip
def test_an_output_under_a_folder_that_cannot_be_created_fails_before_any_work(ws, trained, monkeypatch, command):
    images = trained["vqvae"].parent / "images"
    args = {
        "train-vqvae": ["--data", images, "--out", f"{UNWRITABLE}.safetensors", *TINY_VQVAE],
        "extract-codes": [trained["vqvae"], "--out", f"{UNWRITABLE}.safetensors", "--device", "cpu"],
        "train-prior": [trained["codes"], "--out", f"{UNWRITABLE}.safetensors", *TINY_PRIOR],
        "sample": [trained["prior"], "--out", UNWRITABLE, "--n", 2, "--device", "cpu"],
        "reconstruct": [trained["vqvae"], "--out", UNWRITABLE, "--n", 2, "--device", "cpu"],
        "interpolate": [trained["vqvae"], images / "a" / "00.png", images / "b" / "00.png", "--out", f"{UNWRITABLE}.png"],
        "codebook": [trained["vqvae"], "--out", f"{UNWRITABLE}.png", "--device", "cpu"],
        "curves": [trained["vqvae"].with_suffix(".metrics.jsonl"), "--out", f"{UNWRITABLE}.png"],
        "train-classifier": ["--data", images, "--out", f"{UNWRITABLE}.safetensors", "--epochs", 1, "--device", "cpu"],
        "evaluate": ["--codes", trained["codes"], "--prior", trained["prior"], "--json", f"{UNWRITABLE}.json", "--device", "cpu"],
    }[command]

    def no_work(*args, **kwargs):
        raise AssertionError(f"vqgen {command} ran a network before it checked its output path")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_work)  # training, encoding, sampling: all go through here
    result = invoke(command, *args)
    assert not isinstance(result.exception, AssertionError), result.exception
    fails(ws, command, *args, expect=("/proc/nope/x", "cannot write here"))


@pytest.mark.parametrize(
    "command, options, message",
    [
        ("train-vqvae", ["--epochs", "-1"], "--epochs must be at least 1, not -1"),
        ("train-vqvae", ["--batch-size", "0"], "--batch-size must be positive, not 0"),
        ("train-vqvae", ["--save-every", "0"], "--save-every must be at least 1, not 0"),
        ("train-vqvae", ["--lr", "0"], "--lr must be positive, not 0.0"),
        ("train-vqvae", ["--warmup-steps", "-1"], "--warmup-steps must not be negative, not -1"),
        ("train-vqvae", ["--augment-shift", "-1"], "--augment-shift must be 0 or more pixels, not -1"),
        ("train-vqvae", ["--head-channels", "-1"], "--head-channels must be 0 (no head) or more, not -1"),
        ("train-vqvae", ["--codebook-dim", "-2"], "--codebook-dim must be at least 1, not -2"),
        ("extract-codes", ["--augment-copies", "-1"], "--augment-copies must be 0 or more, not -1"),
        ("extract-codes", ["--augment-shift", "0"], "--augment-shift must be at least 1 pixel, not 0"),
        ("train-classifier", ["--augment-shift", "-1"], "--augment-shift must be 0 or more pixels, not -1"),
        ("train-prior", ["--epochs", "0"], "--epochs must be at least 1, not 0"),
        ("train-prior", ["--label-dropout", "1"], "--label-dropout must be in [0, 1), not 1.0"),
        ("train-prior", ["--ema-decay", "1"], "--ema-decay must be in [0, 1), not 1.0"),
        ("train-prior", ["--attention-heads", "3"], "--attention-heads must be 0 or a divisor of --channels 8, not 3"),
        ("train-prior", ["--label-dropout", "-0.1"], "--label-dropout must be in [0, 1), not -0.1"),
        ("train-prior", ["--label-dropout", "0.1", "--unconditional"], "--label-dropout needs a class-conditional prior"),
        ("sample", ["--temperature", "0"], "--temperature must be positive, not 0.0"),
        ("sample", ["--temperature", "-1"], "--temperature must be positive, not -1.0"),
        ("sample", ["--top-k", "17"], "--top-k must be between 1 and K=16, not 17"),
        ("sample", ["--top-k", "0"], "--top-k must be between 1 and K=16, not 0"),
        ("sample", ["--n", "0"], "--n must be at least 1, not 0"),
        ("sample", ["--batch-size", "0"], "--batch-size must be positive, not 0"),
        ("sample", ["--guidance", "-1"], "--guidance must be >= 0, not -1.0"),
        ("sample", ["--guidance", "2"], "prior.safetensors: --guidance 2.0 needs a prior trained with --label-dropout > 0"),
        ("sample-uncond", ["--guidance", "0.5"], "uncond.safetensors: --guidance 0.5 needs a class-conditional prior"),
    ],
)
def test_invalid_option_values(ws, trained, command, options, message):
    if command == "train-vqvae":
        args = [command, "--data", trained["vqvae"].parent / "images", "--out", ws / "out" / "vq.safetensors", *TINY_VQVAE]
    elif command == "train-prior":
        args = [command, trained["codes"], "--out", ws / "out" / "p.safetensors", *TINY_PRIOR]
    elif command == "extract-codes":
        args = [command, trained["vqvae"], "--out", ws / "out" / "c.safetensors", "--device", "cpu"]
    elif command == "train-classifier":
        args = [command, "--data", trained["vqvae"].parent / "images", "--out", ws / "out" / "c.safetensors",
                "--epochs", "1", "--device", "cpu"]
    else:
        prior = trained["uncond"] if command == "sample-uncond" else trained["prior"]
        args = ["sample", prior, "--out", ws / "out", "--device", "cpu"]
    fails(ws, *args, *options, expect=(message,))
