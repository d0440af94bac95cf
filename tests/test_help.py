"""`vqgen COMMAND --help` at 80 columns: options in groups (Typer's help panels), each with room for its help."""

import os
import re
import subprocess
import sys

import pytest

from vqgen.cli import app
from vqgen.config import PANELS

COMMANDS = [name for name, _ in sorted((c.name, c) for c in app.registered_commands)]
# the start of the last text column of a panel line: text after two or more spaces (columns are padded), or at its start
LAST_COLUMN = re.compile(r"(?:^|(?<=  ))\S(?:(?!  ).)*$")
NARROWEST = 30


def help_text(*command: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    result = subprocess.run([sys.executable, "-m", "vqgen", *command, "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def help_columns(text: str) -> dict[str, int]:
    """Panel title -> width of its help-text column: from where that column starts (the leftmost start of a
    last column on any line of the panel) to the panel's inner right edge."""
    widths: dict[str, int] = {}
    panel = None
    for line in text.splitlines():
        if line.startswith("╭─"):
            panel = line.strip("╭─╮ ")
        elif line.startswith("╰"):
            panel = None
        elif panel and line.startswith("│") and line.endswith("│"):
            inner = line[1:-1]
            found = LAST_COLUMN.search(inner.rstrip())
            if found:
                width = len(inner) - 1 - found.start()  # the last character of inner is the panel's padding
                widths[panel] = min(width, widths.get(panel, width))
    return widths


def test_the_parser_measures_the_help_column():
    names = " --restart-dead   --no-restart-dead   "
    rows = [names + "a help text ", " " * len(names) + "that wraps  ", " --cosine".ljust(len(names)) + "on".ljust(12)]
    panel = "╭─ P ─╮\n" + "".join(f"│{row} │\n" for row in rows) + "╰─╯"
    assert help_columns(panel) == {"P": 12}


@pytest.mark.parametrize("command", [[]] + [[name] for name in COMMANDS], ids=lambda c: " ".join(c) or "vqgen")
def test_help_fits_80_columns_with_readable_help(command):
    text = help_text(*command)
    assert all(len(line) <= 80 for line in text.splitlines())
    widths = help_columns(text)
    assert widths, "no panels found"
    narrow = {panel: width for panel, width in widths.items() if width < NARROWEST}
    assert not narrow, f"vqgen {' '.join(command)} --help: help columns narrower than {NARROWEST}: {narrow}"


def test_training_help_comes_in_groups_in_order():
    text = help_text("train-vqvae")
    panels = [line.strip("╭─╮ ") for line in text.splitlines() if line.startswith("╭─")]
    assert panels[0] == "Options"  # --help
    expected = ["Data", "Model", "Quantizer", "Codebook (vq, rvq)", "Dead-code restarts (vq, rvq)", "Training",
                "GAN and losses", "Device", "Output"]
    assert panels[1:] == expected and all(panel in PANELS for panel in expected)
    assert len(text.splitlines()) < 250  # was 301 lines in one panel
    quantizer = text.split("Quantizer ─")[1].split("╰")[0]
    assert "--num-codes" in quantizer and "--fsq-levels" in quantizer and "--epochs" not in quantizer
