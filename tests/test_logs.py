"""Progress in a log file: one line per loop (and per tenth of a long one), never a redrawn bar."""

import re
import subprocess
import sys

from tests.conftest import TINY_VQVAE
from vqgen.config import VQVAETrainOptions
from vqgen.logs import LineProgress, progress


def ticking(n: int, seconds_per_item: float, now: list[float]):
    for i in range(n):
        now[0] = seconds_per_item * (i + 1)  # the time when item i is done
        yield i


def test_a_short_loop_writes_one_line_with_the_postfix(capsys):
    now = [0.0]
    bar = LineProgress(ticking(50, 0.1, now), 50, "vqvae epoch 1/2", clock=lambda: now[0])
    for _ in bar:
        bar.set_postfix(loss="0.1234")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["vqvae epoch 1/2: 50/50 in 5.0s (10.0/s), loss 0.1234"]


def test_a_long_loop_writes_a_line_per_tenth_once_it_is_long():
    now, written = [0.0], []
    bar = LineProgress(ticking(20, 10.0, now), 20, "features", clock=lambda: now[0], long_s=60.0)
    bar.write = lambda done, seconds: written.append((done, seconds))
    assert list(bar) == list(range(20))
    # tenths at 2, 4, ... items; the first after 60 s is at 8 items (80 s); then the end
    assert written == [(8, 80.0), (10, 100.0), (12, 120.0), (14, 140.0), (16, 160.0), (18, 180.0), (20, 200.0)]


def test_a_resumed_loop_counts_from_where_it_was_and_other_ranks_are_quiet(capsys):
    now = [0.0]
    list(LineProgress(ticking(5, 1.0, now), 10, "prior epoch 3/12", initial=5, clock=lambda: now[0]))
    list(LineProgress(ticking(5, 1.0, now), 5, "rank 1", quiet=True, clock=lambda: now[0]))
    assert capsys.readouterr().err == "prior epoch 3/12: 10/10 in 5.0s (1.0/s)\n"


def test_progress_is_a_line_logger_when_stderr_is_not_a_terminal():
    assert isinstance(progress(range(3), 3, "x"), LineProgress)  # pytest captures stderr: not a terminal


def test_a_redirected_training_run_logs_lines_not_frames(tmp_path):
    out = tmp_path / "vqvae.safetensors"
    command = [sys.executable, "-m", "vqgen", "train-vqvae", "--epochs", "1", "--out", str(out), "--device", "cpu",
               *TINY_VQVAE]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    # the data line, the epoch's progress (one line, or up to 9 more on a slow machine) and its report
    assert 3 <= len(lines) <= 12, result.stderr
    steps = [re.match(r"vqvae epoch 1/1: (\d+)/(\d+) in [\d.]+s \([\d.]+/s\), loss ", line) for line in lines]
    done = [(int(m[1]), int(m[2])) for m in steps if m]
    batches = 4500 // VQVAETrainOptions.batch_size  # whole batches of the default size
    assert done and done[-1] == (batches, batches) and len(done) <= 10
    assert any(line.startswith("vqvae epoch 1  train mse") for line in lines)  # the epoch's report
