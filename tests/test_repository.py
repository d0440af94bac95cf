"""The repository itself: no tracked file names a path of one machine, and the bench scripts ask for the
data a fresh clone does not have instead of reading it from such a path."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# paths under /work, /home/<user> or /Users/<user> at the start of a path (not inside a URL)
MACHINE_PATH = re.compile(r"(?<![\w.-])/(?:work|home/[A-Za-z_][\w.-]*|Users/[A-Za-z_][\w.-]*)/")


def tracked_text_files() -> list[tuple[str, str]]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in filter(None, listed.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:  # images, weights and arrays are binary
            files.append((name, data.decode("utf-8", errors="replace")))
    return files


def test_the_pattern_finds_machine_paths_and_only_those():
    assert MACHINE_PATH.search("default=Path('" + "/wo" + "rk/shared/data/cifar10_5k.npz')")
    assert MACHINE_PATH.search("see " + "/ho" + "me/alice/runs/vqvae.safetensors")
    assert MACHINE_PATH.search("(`" + "/Us" + "ers/bob/photos/`)")
    for fine in ("https://github.com/rasbt/mlxtend", "--out /tmp/priors", "--data /data/cifar10",
                 "vqgen/assets/mnist5k.npz", "https://example.org/work/x", "/shared/ckpt/vqvae.safetensors"):
        assert not MACHINE_PATH.search(fine), fine


def test_no_tracked_file_names_a_machine_path():
    files = tracked_text_files()
    assert any(name == "README.md" for name, _ in files)
    found = [f"{name}:{number}: {line.strip()}" for name, text in files
             for number, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "machine-specific paths in tracked files:\n" + "\n".join(found)


@pytest.mark.parametrize("script, flag", [("hierarchy.py", "--npz PATH"), ("priors.py", "--cifar-npz PATH")])
def test_bench_scripts_ask_for_data_a_clone_does_not_have(script, flag):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0]
