"""Everyday commands (reconstruct, interpolate, info, codebook, curves), shell completion and the Python API."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vqgen
from vqgen.formats.files import save_vqgen_file
from vqgen.cli import app
from vqgen.data import load_image_data
from vqgen.errors import VQGenError
from vqgen.tools.curves import write_curves
from vqgen.tools.draw import COLORS

SIZE = 16  # folder images are 16x16 RGB; the tiny VQ-VAE maps them to 4x4 codes
TINY = ["--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "-K", "16", "-D", "8"]


def cli(*args, ok: bool = True, **kwargs):
    result = CliRunner().invoke(app, [str(a) for a in args], prog_name="vqgen", **kwargs)
    if ok and result.exit_code != 0:
        raise AssertionError(f"vqgen {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}")
    return result


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) ints, as the PNG writer stores it."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(int)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def grid_size(n: int, nrow: int, h: int = SIZE, w: int = SIZE, pad: int = 2) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid for n images."""
    cols, rows = min(n, nrow), -(-n // nrow)
    return cols * (w + pad) + pad, rows * (h + pad) + pad


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory) -> dict:
    """A labelled folder of .png and .jpg shapes, and a tiny VQ-VAE trained on it for one epoch."""
    root = tmp_path_factory.mktemp("tools")
    data = root / "shapes"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("circles", "squares")):
        (data / name).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            y, x = np.mgrid[:SIZE, :SIZE]
            cy, cx = 4 + i, 5 + c * 4
            inside = (y - cy) ** 2 + (x - cx) ** 2 <= 9 if c == 0 else (abs(y - cy) <= 3) & (abs(x - cx) <= 3)
            image[inside] = rng.integers(120, 255, 3)
            Image.fromarray(image).save(data / name / f"{i:02d}.{'jpg' if i % 2 else 'png'}", quality=95)
    vqvae = root / "ck" / "vqvae.safetensors"
    cli("train-vqvae", "--data", data, "--out", vqvae, "--epochs", "1", "--batch-size", "4",
        "--val-fraction", "0.5", "--device", "cpu", *TINY)
    return {"root": root, "data": data, "vqvae": vqvae}


# ----------------------------------------------------------------------------- training artefacts


def test_training_writes_curves_and_epoch_grids(folder_model, tiny_pipeline):
    vqvae = folder_model["vqvae"]
    width, height = Image.open(vqvae.with_name("vqvae.curves.png")).size
    assert width == 3 * 320 and height % 220 == 0  # panels of 320x220, three per row
    # the epoch's grid: the 6 validation images beside their reconstructions
    assert Image.open(vqvae.with_name("vqvae.epochs") / "recon_001.png").size == grid_size(12, 8)
    prior_curves = tiny_pipeline["prior"].with_name(f"{tiny_pipeline['prior'].stem}.curves.png")
    width, height = Image.open(prior_curves).size
    assert height == 220 and width in (320, 640, 960)  # bits per code (, lr, ...) in one row


# ----------------------------------------------------------------------------- reconstruct


def test_reconstruct_names_sizes_and_content(folder_model, tmp_path):
    out = tmp_path / "rec"
    result = cli("reconstruct", folder_model["vqvae"], "--out", out, "--n", "4", "--device", "cpu")
    val = load_image_data(str(folder_model["data"]), val_fraction=0.5).val
    assert len(val) == 6
    chosen = [0, 1, 3, 4]  # 4 of the 6 validation images, spread evenly
    files = [val.dataset.files[val.indices[i]] for i in chosen]
    expected = sorted(str(f.relative_to(folder_model["data"]).with_suffix(".png")) for f in files)
    written = sorted(str(p.relative_to(out / "images")) for p in (out / "images").rglob("*.png"))
    assert written == expected and any(f.suffix == ".jpg" for f in files)
    assert Image.open(out / "grid.png").size == grid_size(8, 4)  # 4 pairs, 2 pairs per row

    vq = vqgen.load_vqvae(folder_model["vqvae"])
    originals = torch.stack([val[i][0] for i in chosen])
    recon = vqgen.reconstruct(vq, originals)
    for f, image in zip(files, recon):
        stored = png(out / "images" / f.relative_to(folder_model["data"]).with_suffix(".png"))
        assert stored.shape == (SIZE, SIZE, 3)
        assert np.abs(stored - as_uint8(image)).max() <= 1
    metrics = json.loads((out / "metrics.json").read_text())
    mse = float((recon - originals).pow(2).mean())
    assert metrics["count"] == 4 and metrics["mse"] == pytest.approx(mse, rel=1e-4)
    assert f"MSE {mse:.5f}" in result.output and "PSNR" in result.output


def test_reconstruct_bad_split_writes_nothing(folder_model, tmp_path):
    out = tmp_path / "rec"
    result = cli("reconstruct", folder_model["vqvae"], "--out", out, "--split", "test", ok=False)
    one_line_error(result, "--split")
    assert not out.exists()


def test_reconstruct_split_all_takes_every_image_of_a_folder(folder_model, tmp_path):
    out = tmp_path / "rec"
    cli("reconstruct", folder_model["vqvae"], "--out", out, "--split", "all", "--n", "100", "--device", "cpu")
    inputs = sorted(p for p in folder_model["data"].rglob("*") if p.is_file())
    expected = sorted(str(p.relative_to(folder_model["data"]).with_suffix(".png")) for p in inputs)
    written = sorted(str(p.relative_to(out / "images")) for p in (out / "images").rglob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(inputs) == 12 and written == expected and metrics["count"] == 12 and metrics["split"] == "all"


# ----------------------------------------------------------------------------- interpolate


def test_interpolate_strips_start_and_end_at_the_reconstructions(folder_model, tmp_path):
    a, b = folder_model["data"] / "circles" / "00.png", folder_model["data"] / "squares" / "03.jpg"
    out = tmp_path / "walk.png"
    steps = 5
    result = cli("interpolate", folder_model["vqvae"], a, b, "--steps", steps, "--out", out, "--device", "cpu")
    vq = vqgen.load_vqvae(folder_model["vqvae"])
    images = vqgen.read_images([a, b], vq)
    recon = vqgen.reconstruct(vq, images)
    for strip in (out, tmp_path / "walk.codes.png"):
        pixels = png(strip)
        assert pixels.shape[:2] == grid_size(steps + 2, steps + 2)[::-1]
        tile = lambda k: pixels[2 : 2 + SIZE, 2 + k * (SIZE + 2) : 2 + k * (SIZE + 2) + SIZE]  # noqa: E731
        assert np.abs(tile(0) - as_uint8(images[0])).max() <= 1  # A itself
        assert np.abs(tile(1) - as_uint8(recon[0])).max() <= 1  # first step: A's codes
        assert np.abs(tile(steps) - as_uint8(recon[1])).max() <= 1  # last step: B's codes
    assert "codes differ" in result.output


def test_interpolate_dataset_references(tiny_pipeline, tmp_path):
    out = tmp_path / "digits.png"
    cli("interpolate", tiny_pipeline["vqvae"], "mnist5k:3", "mnist5k:7", "--steps", "3", "--out", out, "--device", "cpu")
    val = load_image_data("mnist5k").val
    assert png(out).shape[:2] == grid_size(5, 5, 28, 28)[::-1]
    assert np.abs(png(out)[2:30, 2:30] - as_uint8(val[3][0])).max() <= 1

    bad = cli("interpolate", tiny_pipeline["vqvae"], "mnist5k:99999", "mnist5k:0", "--out", out, ok=False)
    one_line_error(bad, "mnist5k:99999", "out of range")
    missing = cli("interpolate", tiny_pipeline["vqvae"], tmp_path / "nope.png", "mnist5k:0", "--out", out, ok=False)
    one_line_error(missing, "nope.png", "no such image file")
    steps = cli("interpolate", tiny_pipeline["vqvae"], "mnist5k:0", "mnist5k:1", "--steps", "1", ok=False)
    one_line_error(steps, "--steps")


# ----------------------------------------------------------------------------- info


def test_info_json_for_every_kind(tiny_pipeline, tmp_path):
    samples = tmp_path / "samples"
    cli("sample", tiny_pipeline["prior"], "--n", "2", "--label", "3", "--sampler", "full", "--out", samples,
        "--device", "cpu")
    files = {**tiny_pipeline, "samples": samples / "codes.safetensors"}
    for kind, path in files.items():
        info = json.loads(cli("info", path, "--json").output)
        assert info["kind"] == kind == info["metadata"]["kind"]
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert info["file_size"] == path.stat().st_size
    codes = json.loads(cli("info", files["codes"], "--json").output)
    assert codes["tensors"]["val_codes"]["shape"] == [500, 7, 7]
    assert codes["tensors"]["val_labels"]["dtype"] == "I64"
    assert codes["metadata"]["label_names"] == [str(d) for d in range(10)]
    vq = json.loads(cli("info", files["vqvae"], "--json").output)
    assert vq["metadata"]["config"]["num_codes"] == vq["tensors"]["quantizer.codebook"]["shape"][0]
    assert "val_psnr" in vq["metadata"]["metrics"]


def test_info_table_and_other_kinds(tmp_path):
    path = tmp_path / "state.safetensors"
    save_vqgen_file(path, {"step": torch.tensor(7), "w": torch.zeros(2, 3, dtype=torch.float16)},
                    {"kind": "resume", "run": {"stage": "prior", "history": [1, 2]}, "label_names": ["[x]", "y"]})
    table = cli("info", path).output
    assert "a resumable training state" in table and "sha256" in table
    assert "[[x], y]" in table  # metadata is shown as text, never parsed as rich markup
    assert "2x3" in table and "F16" in table
    info = json.loads(cli("info", path, "--json").output)
    assert info["tensors"]["step"] == {"shape": [], "dtype": "I64"} and info["num_elements"] == 7


def test_info_rejects_foreign_files(tmp_path):
    image = tmp_path / "picture.png"
    Image.new("L", (4, 4)).save(image)
    one_line_error(cli("info", image, ok=False), "picture.png", "not a safetensors file")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    one_line_error(cli("info", plain, ok=False), "plain.safetensors", "not one written by vqgen")
    one_line_error(cli("info", tmp_path / "missing.safetensors", ok=False), "no such file")


# ----------------------------------------------------------------------------- codebook


def test_codebook_picture_and_usage(folder_model, tiny_pipeline, tmp_path):
    from vqgen.tools.codebook import codebook_picture, pure_code_images

    # colour images: residual VQ (the photos' default), a panel per codebook of 16 codes
    out = tmp_path / "codebook.png"
    result = codebook_picture(folder_model["vqvae"], out, device="cpu")
    vq = vqgen.load_vqvae(folder_model["vqvae"])
    assert vq.cfg.code_depth == 2 and result["codebooks"] == 2
    val = load_image_data(str(folder_model["data"]), val_fraction=0.5).val
    stacks = vqgen.encode(vq, torch.stack([val[i][0] for i in range(len(val))]))
    per_book = [torch.bincount(stacks[:, d].flatten(), minlength=16).tolist() for d in range(2)]
    assert result["counts"] == per_book[0] + per_book[1]
    assert result["map_size"] == 4 and result["codes_used"] == sum(len(stacks[:, d].unique()) for d in range(2))
    # tiles: 4x4 codes decode to 16x16, enlarged to 32x32; 8 columns of 16 codes, 3 px apart; panels 12 px apart
    sheet_w, sheet_h = 8 * 35 + 3, 2 * 35 + 3
    panel_h = 140 + 4 + 20 + 4 + sheet_h
    assert Image.open(out).size == (max(480, sheet_w), 2 * panel_h + 12)
    # a finer code's tile is the stack (the first codebook's most used code, that code) decoded
    base = max(range(16), key=lambda c: (per_book[0][c], -c))
    tiles = pure_code_images(vq, 2, codebook=1, base=base)
    pairs = torch.stack([torch.full((16, 2, 2), base), torch.arange(16).view(16, 1, 1).expand(16, 2, 2)], dim=1)
    assert torch.allclose(tiles, vq.decode(pairs), atol=1e-6)

    # one codebook (digits): one panel
    single = codebook_picture(tiny_pipeline["vqvae"], tmp_path / "digits.png", device="cpu", split="val")
    assert single["codebooks"] == 1 and len(single["counts"]) == 32
    assert Image.open(tmp_path / "digits.png").size[1] == 140 + 4 + 20 + 4 + 4 * (28 + 3) + 3  # 32 codes: 4 rows of 8

    printed = cli("codebook", folder_model["vqvae"], "--out", tmp_path / "cli.png", "--map-size", "2", "--device", "cpu")
    assert f"{result['codes_used']}/32 codes used" in printed.output
    bad = cli("codebook", folder_model["vqvae"], "--out", tmp_path / "cb.jpg", ok=False)
    one_line_error(bad, "--out", ".png")


# ----------------------------------------------------------------------------- curves


def test_curves_from_a_resumed_log(tmp_path):
    log = tmp_path / "vqvae.metrics.jsonl"
    records = [{"epoch": e, "lr": 1e-3, "train_loss": 1.0 / e, "train_recon_mse": 0.9 / e, "val_psnr": 10.0 + e,
                "val_perplexity": 5.0 * e, "val_codes_used": 8 * e, "gan_d_loss": 0.7} for e in (1, 2, 3)]
    stale = {**records[1], "val_psnr": 99.0}  # epoch 2 logged before a crash, then again after the resume
    lines = [json.dumps(r) for r in (records[0], stale, records[1], records[2])] + ["", json.dumps({"note": "x"})]
    log.write_text("\n".join(lines) + "\n")
    cli("curves", log)
    pixels = png(tmp_path / "vqvae.curves.png")
    assert pixels.shape[:2] == (2 * 220, 3 * 320)  # loss, PSNR, codebook | adversarial, lr
    psnr_panel = pixels[:220, 320:640]
    assert (np.abs(psnr_panel - np.array(COLORS[0])).sum(axis=2) == 0).sum() > 50  # the line is drawn

    prior_log = tmp_path / "prior.metrics.jsonl"
    prior_log.write_text("".join(json.dumps({"epoch": e, "train_bits_per_code": 5 - e, "val_bits_per_code": 5.5 - e})
                                 + "\n" for e in (1, 2)))
    written = write_curves(prior_log, tmp_path / "out" / "prior.png")
    assert Image.open(written).size == (320, 220)
    with pytest.raises(VQGenError, match="not a metrics log"):
        write_curves(tmp_path / "out" / "prior.png", tmp_path / "x.png")  # a PNG is no log
    one_line_error(cli("curves", tmp_path / "missing.metrics.jsonl", ok=False), "no such metrics log")


# ----------------------------------------------------------------------------- completion


def test_shell_completion(tmp_path, monkeypatch):
    # name the shell rather than detect it: a run with no shell among its parent processes detects none
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    env = {"_VQGEN_COMPLETE": "complete_bash", "COMP_WORDS": "vqgen recon", "COMP_CWORD": "1"}
    assert cli(env=env).output.split() == ["reconstruct"]
    env = {"_VQGEN_COMPLETE": "complete_bash", "COMP_WORDS": "vqgen info --j", "COMP_CWORD": "2"}
    assert cli(env=env).output.split() == ["--json"]
    assert "_VQGEN_COMPLETE=complete_bash" in cli("--show-completion", "bash").output
    cli("--install-completion", "bash", env={"HOME": str(tmp_path)})
    assert "vqgen" in (tmp_path / ".bashrc").read_text()


# ----------------------------------------------------------------------------- Python API


def test_python_api(tiny_pipeline):
    vq = vqgen.load_vqvae(tiny_pipeline["vqvae"])
    images = torch.stack([load_image_data("mnist5k").val[i][0] for i in range(3)])
    codes = vqgen.encode(vq, images)
    k = vq.cfg.num_codes
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.long and int(codes.max()) < k
    assert torch.equal(vqgen.decode(vq, codes), vq.decode(codes))
    assert vq.meta["kind"] == "vqvae"
    with pytest.raises(VQGenError, match="takes"):
        vqgen.encode(vq, torch.zeros(1, 3, 28, 28))
    with pytest.raises(VQGenError, match=f"0..{k - 1}"):
        vqgen.decode(vq, torch.full((1, 7, 7), k))

    prior = vqgen.load_prior(tiny_pipeline["prior"])
    by_name = vqgen.sample_codes(prior, 2, labels="7", seed=5, sampler="full")
    by_index = vqgen.sample_codes(prior, 2, labels=[7, 7], seed=5, sampler="full")
    assert by_name.shape == (2, 7, 7) and torch.equal(by_name, by_index)
    with pytest.raises(VQGenError, match="class-conditional"):
        vqgen.sample_codes(prior, 2)
    with pytest.raises(VQGenError, match="not one of"):
        vqgen.sample_codes(prior, 1, labels="cat")


def test_import_vqgen_stays_light():
    # the API is re-exported lazily: `import vqgen` (and so the CLI's start-up) does not pay for torch
    code = "import sys, vqgen; print('load_vqvae' in vqgen.__all__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
    assert vqgen.sample_codes is vqgen.api.sample_codes
