"""bench/gpu_check.sh, the prepared GPU check, run end to end on the CPU (--cpu --quick, tiny sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
PARTS = ["env", "device-tests", "sampling", "torchrun-vqvae", "torchrun-prior", "masked-sampling",
         "throughput-vqvae-28", "throughput-vqvae-32-rgb", "throughput-vqvae2-128", "throughput-pixelcnn",
         "throughput-transformer"]


def gpu_check(out: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run(["bash", SCRIPT, out, "--cpu", "--quick", *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable, **env}, timeout=3600)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return result, results


def test_every_part_runs_on_the_cpu_and_reports_its_numbers(tmp_path):
    result, results = gpu_check(tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    parts = {p["name"]: p for p in results["parts"]}
    assert list(parts) == PARTS and results["failed"] == []
    markdown = (tmp_path / "out" / "results.md").read_text()
    for name, part in parts.items():
        assert part["status"] == "ok" and part["rows"], name
        assert f"| {name} | ok |" in markdown and f"## {name}: " in markdown
        assert (tmp_path / "out" / part["log"]).exists()
    tests = parts["device-tests"]["rows"]
    assert any(row["test"].endswith("[cpu]") for row in tests) and {row["outcome"] for row in tests} == {"passed"}
    assert all(row["identical"] is True and row["full s"] > 0 for row in parts["sampling"]["rows"])
    assert {row["prior"] for row in parts["sampling"]["rows"]} == {"pixelcnn", "transformer"}
    for name in ("torchrun-vqvae", "torchrun-prior"):
        assert parts[name]["rows"][-1]["epochs logged"] == "1, 2"  # the second epoch came from the resume file
    masked = parts["masked-sampling"]["rows"]
    assert [(row["prior"], row["steps"]) for row in masked] == [("PixelCNN, cached", 16), ("masked", 2)]
    assert masked[0]["speed-up"] == 1.0 and masked[1]["seconds"] > 0 and masked[1]["speed-up"] > 0
    default = parts["throughput-vqvae-28"]["rows"]
    assert [row["precision"] for row in default] == ["fp32", "bf16", "bf16+compile"]
    assert all(row["images/s"] > 0 for name in PARTS[6:] for row in parts[name]["rows"])


def test_a_failed_or_hung_part_is_reported_and_the_others_still_run(tmp_path):
    result, results = gpu_check(tmp_path / "out", "--only", "env,sampling,throughput-pixelcnn", "--limit", "env=5",
                                GPU_CHECK_HANG="env", GPU_CHECK_FAIL="sampling")
    assert result.returncode == 1
    parts = {p["name"]: p for p in results["parts"]}
    assert results["failed"] == ["env", "sampling"]
    assert parts["env"]["error"].startswith("timed out after 5 s")
    assert parts["sampling"]["error"] == "RuntimeError: forced failure (GPU_CHECK_FAIL)"
    assert parts["throughput-pixelcnn"]["status"] == "ok" and len(parts["throughput-pixelcnn"]["rows"]) == 2
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| sampling | FAILED |" in markdown and "forced failure" in markdown

    bad, _ = gpu_check(tmp_path / "bad", "--only", "sampling,warp-drive")
    assert bad.returncode == 2 and not (tmp_path / "bad").exists()
    assert bad.stderr.strip() == ("gpu_check.sh: unknown part 'warp-drive'; the parts: " + ", ".join(PARTS))
