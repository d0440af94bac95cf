"""Crash safety: SIGKILL during saves never leaves a broken file; NaN losses stop the run and keep good files."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.cli import app
from vqgen.data import list_image_files
from vqgen.formats.images import save_png, to_pil
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import Decoder
from vqgen.train.resume import Progress, TrainingState, join_state, resume_path
from vqgen.logs import JsonlLog

def write_in_a_loop(folder: Path, ready_fd: int) -> None:
    """What training does, over and over: checkpoint, image, log and resume file, each recording round i."""
    model = torch.nn.Linear(256, 256)
    optimizer = torch.optim.Adam(model.parameters())
    state = TrainingState(
        "test", folder / "model.safetensors", {"model": model, "optimizer": optimizer},
        run={"options": {"lr": 1.0, "epochs": 1}},
    )
    log = JsonlLog(folder / "model.metrics.jsonl")
    w = torch.empty(1 << 22)  # 16 MB: writing takes much of each round, so kills land mid-write
    for i in range(1, 10**6):
        save_vqgen_file(folder / "model.safetensors", {"w": w.fill_(i), "b": torch.full((999,), float(i))}, {"kind": "vqvae", "i": i})
        save_png(noisy_image(i), folder / "image.png")  # PIL writes while it encodes: a long window
        log.write({"epoch": i, "padding": "x" * 4000})
        with torch.no_grad():
            model.weight.fill_(float(i))
        state.save(Progress(epoch=i, step=i))
        if i == 1:
            os.write(ready_fd, b"r")


def kill_a_writer(folder: Path, delay: float) -> None:
    """Fork a process that saves in a loop, let it run ``delay`` seconds after its first round, SIGKILL it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into pytest
        try:
            os.close(read_fd)
            write_in_a_loop(folder, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 1) == b"r", "the writer failed before its first round"
        time.sleep(delay)
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read_fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def noisy_image(i: int) -> torch.Tensor:
    """Fixed noise (slow to encode) with a first row that records i."""
    image = torch.rand(1, 512, 512, generator=torch.Generator().manual_seed(0))
    image[0, 0] = (i % 200) / 255
    return image


TARGETS = ("model.safetensors", "image.png", "model.metrics.jsonl", "model.resume.safetensors")
# leftovers of a kill: our temporary names, and the one safetensors itself writes through
TEMP_NAME = re.compile(r"^\.((" + "|".join(re.escape(t) for t in TARGETS) + r")\.\w+\.tmp|tmp\w{6})$")


def check_complete(folder: Path) -> None:
    """Every file a killed writer left is complete and self-consistent; leftovers are hidden temp files."""
    tensors, meta = load_vqgen_file(folder / "model.safetensors", "vqvae")
    i = meta["i"]
    assert bool((tensors["w"] == i).all()) and len(tensors["w"]) == 1 << 22 and bool((tensors["b"] == i).all())

    with Image.open(folder / "image.png") as im:
        pixels = np.asarray(im)
    expected = np.asarray(to_pil(noisy_image(0)))
    assert pixels.shape == (512, 512) and len(np.unique(pixels[0])) == 1
    assert np.array_equal(pixels[1:], expected[1:])

    lines = (folder / "model.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, len(lines) + 1))

    state, meta = load_vqgen_file(folder / "model.resume.safetensors", "resume")
    weights = join_state(meta["state"]["model"], state)["weight"]
    assert bool((weights == meta["progress"]["epoch"]).all())

    for path in folder.iterdir():
        assert path.name in TARGETS or TEMP_NAME.match(path.name), path.name
    assert list_image_files(folder)[0] == [folder / "image.png"]  # a temp file is never taken for an input


def test_sigkill_during_saves_leaves_old_or_new_complete_files(tmp_path):
    rng = random.Random(7)
    for _ in range(8):
        kill_a_writer(tmp_path, rng.uniform(0.0, 0.3))
        check_complete(tmp_path)


# ----------------------------------------------------------------------------- NaN losses


def poison_training_forward(monkeypatch, cls, call: int) -> None:
    """Make the ``call``-th training forward pass of ``cls`` return NaN."""
    original = cls.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == call:
                return out * float("nan")
        return out

    monkeypatch.setattr(cls, "forward", forward)


def error_line(result) -> str:
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, image_folder, monkeypatch):
    poison_training_forward(monkeypatch, Decoder, call=6)  # 4 steps per epoch: step 6 is in epoch 2
    out = tmp_path / "run" / "vq.safetensors"
    args = "--hidden 16 --res-channels 8 -K 16 -D 8 --epochs 3 --batch-size 8 --val-fraction 0.25 --device cpu"
    result = CliRunner().invoke(app, ["train-vqvae", "--data", str(image_folder), "--out", str(out), *args.split()])
    assert result.exit_code == 1
    message = error_line(result)
    assert "the VQ-VAE loss became nan at step 6" in message
    assert "after epoch 1 (step 4)" in message and "--resume auto" in message

    tensors, meta = load_vqgen_file(out, "vqvae")
    assert meta["epoch"] == 1 and all(bool(t.float().isfinite().all()) for t in tensors.values())
    _, state = load_vqgen_file(resume_path(out), "resume")
    assert state["progress"]["epoch"] == 1
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_nan_at_the_first_step_writes_nothing(tmp_path, monkeypatch):
    codes = tmp_path / "codes.safetensors"
    g = torch.Generator().manual_seed(0)
    save_vqgen_file(
        codes,
        {"train_codes": torch.randint(8, (16, 2, 2), generator=g), "train_labels": torch.full((16,), -1),
         "val_codes": torch.randint(8, (4, 2, 2), generator=g), "val_labels": torch.full((4,), -1)},
        {"kind": "codes", "num_codes": 8, "latent_shape": [2, 2], "label_names": None},
    )
    poison_training_forward(monkeypatch, GatedPixelCNN, call=1)
    out = tmp_path / "prior" / "prior.safetensors"
    args = ["train-prior", str(codes), "--out", str(out), "--layers", "1", "--channels", "4", "--kernel-size", "3",
            "--epochs", "2", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    message = error_line(result)
    assert "the prior loss became nan at step 1" in message and "no training state was saved yet" in message
    assert not out.parent.exists()  # no checkpoint, no log, no folder
