"""Exact resume: N epochs straight == stopped (signal or crash) + resumed, for both training stages."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch.optim.optimizer import register_optimizer_step_post_hook
from typer.testing import CliRunner

from vqgen.formats.files import load_vqgen_file, save_vqgen_file
from vqgen.cli import app
from vqgen.train.resume import join_state, resume_path, split_state

VQVAE_ARGS = (
    "--hidden 16 --res-channels 8 -K 16 -D 8 --epochs 3 --batch-size 8 --val-fraction 0.25 "
    "--restart-every 3 --dead-threshold 10 --device cpu --seed 3"
).split()  # 36 train images / batch 8 = 4 steps per epoch; dead-code restarts draw from the global RNG
PRIOR_ARGS = "--layers 2 --channels 8 --kernel-size 3 --dropout 0.2 --epochs 3 --batch-size 8 --device cpu".split()
# dropout and label dropout: the resumed run must also continue the RNG exactly
TRANSFORMER_ARGS = ("--arch transformer --layers 2 --channels 8 --heads 2 --dropout 0.2 --label-dropout 0.2 "
                    "--epochs 3 --batch-size 8 --device cpu").split()


def invoke(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The one error line of a failed command (and no traceback)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def assert_same_weights(a: Path, b: Path) -> None:
    ta, _ = load_vqgen_file(a)
    tb, _ = load_vqgen_file(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def logged(out: Path) -> list[dict]:
    records = [json.loads(line) for line in out.with_name(f"{out.stem}.metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


class AtStep:
    """A global optimizer hook that calls ``action`` after the optimizer step number ``step`` (1-based)."""

    def __init__(self, step: int, action):
        self.step, self.action, self.count = step, action, 0

    def __call__(self, optimizer, args, kwargs) -> None:
        self.count += 1
        if self.count == self.step:
            self.action()

    def __enter__(self):
        self.handle = register_optimizer_step_post_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def send_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def crash() -> None:
    raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def straight_vqvae(tmp_path_factory, image_folder) -> Path:
    out = tmp_path_factory.mktemp("straight") / "vq.safetensors"
    result = invoke(["train-vqvae", "--data", image_folder, "--out", out, *VQVAE_ARGS])
    assert result.exit_code == 0, result.output
    return out


def test_vqvae_stopped_by_sigterm_mid_epoch_resumes_to_identical_weights(tmp_path, image_folder, straight_vqvae):
    out = tmp_path / "vq.safetensors"
    args = ["train-vqvae", "--data", image_folder, "--out", out, *VQVAE_ARGS]
    with AtStep(6, send_sigterm):  # step 6 = epoch 2, batch 2 of 4
        stopped = invoke(args)
    assert stopped.exit_code == 143, stopped.output
    assert "stopped by SIGTERM at step 6 (epoch 2, batch 2/4)" in stopped.stderr
    assert "--resume auto" in stopped.stderr
    assert resume_path(out).is_file()
    assert load_vqgen_file(out)[1]["epoch"] == 1  # the checkpoint holds the last finished epoch

    resumed = invoke([*args, "--resume", "auto"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.stderr
    assert_same_weights(straight_vqvae, out)
    assert_same_weights(resume_path(straight_vqvae), resume_path(out))  # optimizer, schedule, RNGs too
    assert logged(out) == logged(straight_vqvae)  # same per-epoch losses, the log holds each epoch once


def test_vqvae_crash_resumes_from_the_last_saved_epoch(tmp_path, image_folder, straight_vqvae):
    out = tmp_path / "vq.safetensors"
    args = ["train-vqvae", "--data", image_folder, "--out", out, *VQVAE_ARGS, "--save-every", "2"]
    with AtStep(11, crash):  # epoch 3, batch 3; the last resume file is from the end of epoch 2
        crashed = invoke(args)
    assert isinstance(crashed.exception, RuntimeError)
    _, meta = load_vqgen_file(resume_path(out), "resume")
    assert (meta["progress"]["epoch"], meta["progress"]["batch"], meta["progress"]["step"]) == (2, 0, 8)

    resumed = invoke(["train-vqvae", "--data", image_folder, "--out", out, *VQVAE_ARGS, "--resume", resume_path(out)])
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(straight_vqvae, out)
    assert logged(out) == logged(straight_vqvae)


def test_prior_stopped_at_the_end_of_an_epoch_resumes_to_identical_weights(tmp_path, code_file):
    straight = tmp_path / "a" / "prior.safetensors"
    result = invoke(["train-prior", code_file, "--out", straight, *PRIOR_ARGS])
    assert result.exit_code == 0, result.output

    out = tmp_path / "b" / "prior.safetensors"
    with AtStep(5, lambda: os.kill(os.getpid(), signal.SIGINT)):  # last step of epoch 1 (5 steps per epoch)
        stopped = invoke(["train-prior", code_file, "--out", out, *PRIOR_ARGS])
    assert stopped.exit_code == 130, stopped.output
    assert "stopped by SIGINT at step 5 (epoch 1, batch 5/5)" in stopped.stderr
    resumed = invoke(["train-prior", code_file, "--out", out, *PRIOR_ARGS, "--resume", "auto"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(straight, out)  # the best-validation weights
    assert_same_weights(resume_path(straight), resume_path(out))  # includes the dropout RNG state
    assert logged(out) == logged(straight)
    _, meta = load_vqgen_file(resume_path(out))
    assert meta["progress"]["best"] == min(r["val_nll_nats"] for r in logged(straight))


@pytest.mark.parametrize("arch", ["transformer", "masked"])  # the masked prior also draws its masks from the RNG
def test_transformer_prior_stopped_mid_epoch_resumes_to_identical_weights(tmp_path, code_file, arch):
    args = [*TRANSFORMER_ARGS[2:], "--arch", arch]
    straight = tmp_path / "a" / "prior.safetensors"
    result = invoke(["train-prior", code_file, "--out", straight, *args])
    assert result.exit_code == 0, result.output

    out = tmp_path / "b" / "prior.safetensors"
    with AtStep(7, send_sigterm):  # epoch 2, batch 2 of 5
        stopped = invoke(["train-prior", code_file, "--out", out, *args])
    assert stopped.exit_code == 143, stopped.output
    assert "stopped by SIGTERM at step 7 (epoch 2, batch 2/5)" in stopped.stderr
    other = invoke(["train-prior", code_file, "--out", out, *PRIOR_ARGS, "--resume", "auto"])
    assert f"arch (saved '{arch}', now 'pixelcnn')" in error_line(other)
    resumed = invoke(["train-prior", code_file, "--out", out, *args, "--resume", "auto"])
    assert resumed.exit_code == 0, resumed.output
    assert load_vqgen_file(out)[1]["config"]["arch"] == arch
    assert_same_weights(straight, out)  # the best-validation weights
    assert_same_weights(resume_path(straight), resume_path(out))  # optimizer, schedule, dropout RNG
    assert logged(out) == logged(straight)


def test_resume_extends_a_finished_run_and_refuses_a_different_model(tmp_path, code_file):
    out = tmp_path / "prior.safetensors"
    args = ["train-prior", code_file, "--out", out, *PRIOR_ARGS]
    assert invoke([*args, "--epochs", "1"]).exit_code == 0
    longer = invoke([*args, "--epochs", "2", "--resume", "auto"])
    assert longer.exit_code == 0, longer.output
    assert [r["epoch"] for r in logged(out)] == [1, 2]

    other = invoke([*args, "--layers", "3", "--resume", "auto"])
    assert other.exit_code == 1
    assert "num_layers (saved 2, now 3)" in error_line(other)


def test_resume_auto_without_a_file_starts_fresh_and_a_missing_path_is_an_error(tmp_path, code_file):
    out = tmp_path / "prior.safetensors"
    fresh = invoke(["train-prior", code_file, "--out", out, *PRIOR_ARGS, "--epochs", "1", "--resume", "auto"])
    assert fresh.exit_code == 0, fresh.output
    assert "starting from scratch" in fresh.stderr
    missing = invoke(["train-prior", code_file, "--out", tmp_path / "x.safetensors", *PRIOR_ARGS, "--resume", "nope.safetensors"])
    assert missing.exit_code == 1
    assert "--resume nope.safetensors: no such file" in error_line(missing)
    assert not (tmp_path / "x.safetensors").exists()
    # a VQ-VAE run refuses the prior's state
    wrong = invoke(["train-vqvae", "--out", tmp_path / "vq.safetensors", "--resume", resume_path(out), "--epochs", "1",
                    "--hidden", "16", "--res-channels", "8", "-K", "16", "-D", "8"])
    assert wrong.exit_code == 1
    assert "the training state of a prior run, not of a vqvae run" in error_line(wrong)


def test_resume_file_is_safetensors_with_json_and_round_trips_optimizer_state(tmp_path, straight_vqvae):
    with safe_open(str(resume_path(straight_vqvae)), framework="pt") as f:
        meta = json.loads(f.metadata()["vqgen"])
        names = set(f.keys())
    assert meta["kind"] == "resume" and meta["stage"] == "vqvae"
    assert meta["progress"]["epoch"] == 3 and meta["progress"]["step"] == 12
    assert {"rng.torch", "rng.python.state", "optimizer.state.0.exp_avg", "model.quantizer.usage"} <= names
    assert meta["run"]["options"]["seed"] == 3

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(split_state(optimizer.state_dict(), "optimizer", tensors)))
    restored = join_state(skeleton, tensors)
    assert restored["param_groups"][0]["betas"] == (0.8, 0.9)
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(restored)
    for key, value in optimizer.state_dict()["state"][1].items():
        assert torch.equal(fresh.state_dict()["state"][1][key], value)


def test_a_prior_with_a_weight_average_resumes_mid_epoch_to_the_same_average(tmp_path, code_file):
    args = [*PRIOR_ARGS, "--ema-decay", "0.9"]
    straight = tmp_path / "a" / "prior.safetensors"
    assert invoke(["train-prior", code_file, "--out", straight, *args]).exit_code == 0

    out = tmp_path / "b" / "prior.safetensors"
    with AtStep(7, send_sigterm):  # epoch 2, batch 2 of 5
        stopped = invoke(["train-prior", code_file, "--out", out, *args])
    assert stopped.exit_code == 143, stopped.output
    resumed = invoke(["train-prior", code_file, "--out", out, *args, "--resume", "auto"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(straight, out)
    assert_same_weights(resume_path(straight), resume_path(out))  # the average and its update count too
    assert logged(out) == logged(straight)


def test_a_new_lr_on_resume_rescales_the_schedule_through_its_public_state(tmp_path):
    from vqgen.train.loop import warmup_cosine
    from vqgen.train.resume import TrainingState

    written: list[str] = []

    class Watched(torch.optim.lr_scheduler.LambdaLR):
        """Records attributes set on it from outside the scheduler's own methods."""

        def __setattr__(self, name, value):
            written.append(name)
            super().__setattr__(name, value)

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    schedule = Watched(optimizer, warmup_cosine(100, 10))
    for _ in range(20):
        optimizer.step()
        schedule.step()
    run = {"options": {"lr": 2e-3, "epochs": 1}}
    written.clear()
    TrainingState("prior", tmp_path / "p.safetensors", {"schedule": schedule}, run)._follow_changed_options(
        {"lr": 1e-3, "epochs": 1})
    assert not [name for name in written if name.startswith("_")], written  # no private attribute written
    expected = 2e-3 * warmup_cosine(100, 10)(20)
    assert schedule.get_last_lr() == pytest.approx([expected]) and optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert schedule.base_lrs == pytest.approx([2e-3])
