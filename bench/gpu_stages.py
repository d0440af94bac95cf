"""The parts of the GPU check (bench/gpu_check.py) that run whole stages: the suite's device tests (pytest) and
both trainers under torchrun (``python -m vqgen``), so they need none of vqgen's internal names.

Each is started by gpu_check.py as ``python bench/gpu_stages.py --part NAME RESULT_JSON WORK_DIR [--cpu] [--quick]``.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from gpu_check import REPO, Mode, PartRecord, last_error, part_main


def run_streaming(cmd: list[str], what: str, cwd: Path = REPO) -> float:
    """Run ``cmd`` with its output passed on line by line (to this part's log); raise with its last line on failure.
    Returns the seconds it took."""
    print("$", " ".join(map(str, cmd)), flush=True)
    started, tail = time.perf_counter(), collections.deque(maxlen=20)
    with subprocess.Popen(list(map(str, cmd)), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                tail.append(line.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {last_error(tail)}")
    return time.perf_counter() - started


def cuda_test_files() -> list[Path]:
    """The test files with CUDA cases (they mention cuda); this check's own test excepted."""
    return sorted(p for p in (REPO / "tests").glob("test_*.py")
                  if p.name != "test_gpu_check.py" and "cuda" in p.read_text())


def device_tests(record: PartRecord, mode: Mode, work: Path) -> None:
    """The device cases on this device: on a GPU a skipped CUDA case fails the part, as does finding none."""
    files, xml = cuda_test_files(), work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}", "-k", mode.device,
           *[f.relative_to(REPO) for f in files]]
    try:
        run_streaming(cmd, "pytest")
    finally:  # the cases' rows, also when some failed
        cases = junit_cases(xml) if xml.exists() else []
        for case in cases:
            record.add(**case)
    if not cases:
        raise RuntimeError(f"no {mode.device} test cases in {', '.join(f.name for f in files)}")
    skipped = [c["test"] for c in cases if c["outcome"] == "skipped" and "cuda" in (c["test"] + c["note"]).lower()]
    if skipped:
        raise RuntimeError(f"{len(skipped)} CUDA case(s) skipped, e.g. {skipped[0]}")


def junit_cases(xml: Path) -> list[dict]:
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, note = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, note = tag, (found.get("message") or "").split("\n")[0][:200]
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        cases.append({"test": name, "outcome": outcome, "seconds": float(case.get("time", 0)), "note": note})
    return cases


TINY_VQVAE = ["--hidden", "16", "--res-channels", "8", "--res-blocks", "1", "-K", "32", "-D", "8"]
TINY_PRIOR = ["--layers", "3", "--channels", "8"]


def torchrun(args: list) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "vqgen",
            *args]


def train_then_resume(record: PartRecord, stage: str, out: Path, args: list, metric: str) -> None:
    """``stage`` for one epoch under torchrun, then a second epoch resumed from the resume file it left."""
    resume = out.with_name(f"{out.stem}.resume.safetensors")
    seconds = run_streaming(torchrun([stage, *args, "--out", out, "--epochs", "1"]), f"{stage} (epoch 1)")
    missing = [p.name for p in (out, resume) if not p.exists()]
    if missing:
        raise RuntimeError(f"{stage} wrote no {' or '.join(missing)}")
    record.add(run=f"{stage} --epochs 1", seconds=seconds, **last_metrics(out, metric))
    seconds = run_streaming(torchrun([stage, *args, "--out", out, "--epochs", "2", "--resume", resume]),
                            f"{stage} (resumed)")
    metrics = last_metrics(out, metric)
    if metrics["epochs logged"] != "1, 2":
        raise RuntimeError(f"the resumed {stage} logged epochs {metrics['epochs logged']}, not 1, 2")
    record.add(run=f"{stage} --epochs 2 --resume", seconds=seconds, **metrics)


def last_metrics(out: Path, metric: str) -> dict:
    records = [json.loads(line) for line in out.with_name(f"{out.stem}.metrics.jsonl").read_text().splitlines() if line]
    return {"epochs logged": ", ".join(str(r["epoch"]) for r in records), metric: records[-1].get(metric)}


def image_folder(root: Path, per_class: int = 24) -> Path:
    """48 labelled 28x28 grey images, a bar across (class "rows") or down (class "columns") at a random place."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("rows", "columns"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 50, (28, 28), dtype=np.uint8)
            bar = slice(*sorted(rng.choice(28, 2, replace=False)))
            if label == "rows":
                pixels[bar] = 220
            else:
                pixels[:, bar] = 220
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def data_args(mode: Mode, work: Path) -> list:
    """mnist5k (shipped) on a GPU; on the CPU a folder of 48 images, so that an epoch is a few steps."""
    return ["--data", image_folder(work / "images")] if mode.cpu else []


def torchrun_vqvae(record: PartRecord, mode: Mode, work: Path) -> None:
    size = [*TINY_VQVAE, "--batch-size", "8"] if mode.cpu else []
    args = [*data_args(mode, work), *size, "--device", mode.device, "--amp", "bf16", "--workers", "2"]
    train_then_resume(record, "train-vqvae", work / "vqvae.safetensors", args, "val_psnr")


def torchrun_prior(record: PartRecord, mode: Mode, work: Path) -> None:
    codes = work / "codes.safetensors"
    extract = [sys.executable, "-m", "vqgen", "extract-codes", "mnist5k", *data_args(mode, work), "--out", codes,
               "--device", mode.device, *(["--augment-copies", "0"] if mode.cpu else [])]
    record.add(run="extract-codes (the shipped VQ-VAE)", seconds=run_streaming(extract, "extract-codes"))
    # fp16 on a GPU: the grad scaler's path; then (full check only) a run that compiles the DDP-wrapped model
    size = [*TINY_PRIOR, "--batch-size", "8", "--amp", "off"] if mode.cpu else ["--amp", "fp16", "--workers", "2"]
    args = [codes, *size, "--device", mode.device]
    out = work / "prior.safetensors"
    train_then_resume(record, "train-prior", out, args, "val_bits_per_code")
    if not mode.cpu and not mode.quick:
        compiled = out.with_name("prior-compiled.safetensors")
        seconds = run_streaming(torchrun(["train-prior", *args, "--out", compiled, "--epochs", "1", "--compile"]),
                                "train-prior --compile")
        record.add(run="train-prior --epochs 1 --compile", seconds=seconds, **last_metrics(compiled, "val_bits_per_code"))


PARTS = {"device-tests": device_tests, "torchrun-vqvae": torchrun_vqvae, "torchrun-prior": torchrun_prior}

if __name__ == "__main__":
    part_main(PARTS)
