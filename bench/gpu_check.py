"""One prepared GPU check: every part in its own process with its own time limit; results as Markdown and JSON.

    bash bench/gpu_check.sh OUT_DIR                # the full check: no part starts after 8 minutes
    bash bench/gpu_check.sh OUT_DIR --quick        # fewer sizes and steps: no part starts after 3 minutes
    bash bench/gpu_check.sh OUT_DIR --cpu --quick  # tiny sizes on the CPU: the script itself works
    bash bench/gpu_check.sh OUT_DIR --only sampling,env   # some parts (--help: every option)

The sizes are estimates for one H100 (8 and about 2 minutes), not yet measured on one.

OUT_DIR receives results.md (the tables), results.json (the raw numbers), logs/PART.log (each
part's output) and work/ (the files the parts write). A part that fails, hangs past its limit or
crashes the GPU is one FAILED row with its last error line; the others still run, and the script
exits 1 once everything is written. The whole run stops starting parts after ``--budget`` seconds.

The parts that drive vqgen's models in-process live in ``gpu_parts.py`` (every vqgen name this check
imports, in one block); those in ``gpu_stages.py`` run whole stages through the command line
(``python -m pytest``, ``python -m vqgen``), so they survive the package's internals moving. This
file, the run and what every part shares, needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FAIL_ENV, HANG_ENV = "GPU_CHECK_FAIL", "GPU_CHECK_HANG"  # comma-separated part names: the tests' way to break a part


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    file: str  # the script that runs it: gpu_parts.py or gpu_stages.py
    limits: tuple[int, int]  # seconds on a GPU: full, --quick


# correctness first, throughput last: when the budget runs out, the numbers are what is lost
PARTS = [
    Part("env", "Device, driver, torch and CUDA versions, free memory", "gpu_parts.py", (60, 60)),
    Part("device-tests", "The test suite's device-parametrised cases", "gpu_stages.py", (150, 150)),
    Part("sampling", "Cached against full sampler, identical codes", "gpu_parts.py", (180, 60)),
    Part("torchrun-vqvae", "torchrun, 1 process: train-vqvae for an epoch, then resume", "gpu_stages.py", (150, 90)),
    Part("torchrun-prior", "torchrun, 1 process: train-prior for an epoch, then resume", "gpu_stages.py", (180, 90)),
    Part("masked-sampling", "Masked prior in parallel steps against the cached PixelCNN, 1,000 maps",
         "gpu_parts.py", (120, 60)),
    Part("throughput-vqvae-28", "Training throughput: the default VQ-VAE, 28x28 grey", "gpu_parts.py", (120, 90)),
    Part("throughput-vqvae-32-rgb", "Training throughput: one level, 32x32 RGB, colour networks", "gpu_parts.py",
         (120, 60)),
    Part("throughput-vqvae2-128", "Training throughput: two levels, 128x128 RGB", "gpu_parts.py", (150, 60)),
    Part("throughput-pixelcnn", "Training throughput: the PixelCNN prior by code map size", "gpu_parts.py", (180, 60)),
    Part("throughput-transformer", "Training throughput: the transformer prior by code map size", "gpu_parts.py",
         (180, 60)),
]
CPU_LIMIT = 900  # seconds for any part with --cpu: tiny sizes, but a shared 2-core machine can starve it
PART_NAMES = [p.name for p in PARTS]
BUDGETS = {"full": 480, "quick": 180, "cpu": 3600}  # seconds for the whole run


# ----------------------------------------------------------------------------- inside a part's process


@dataclass(frozen=True)
class Mode:
    cpu: bool
    quick: bool

    @property
    def device(self) -> str:
        return "cpu" if self.cpu else "cuda"

    @property
    def scale(self) -> str:
        """Which sizes a part uses: gpu, gpu-quick, cpu or cpu-quick (the last two: tiny models)."""
        return ("cpu" if self.cpu else "gpu") + ("-quick" if self.quick else "")


class PartRecord:
    """A part's rows, rewritten to its JSON file after each one, so a part killed midway keeps what it measured."""

    def __init__(self, path: Path):
        self.path, self.rows, self.failures = path, [], 0
        self.save()

    def add(self, **row) -> None:
        self.rows.append(row)
        self.failures += "error" in row
        self.save()

    def attempt(self, what: dict, measure) -> None:
        """One row: ``what`` identifies it, ``measure()`` gives its numbers; an exception becomes the row's error."""
        print("row:", ", ".join(f"{k} {v}" for k, v in what.items()), flush=True)  # a timeout names the row it hit
        try:
            self.add(**what, **measure())
        except Exception as e:  # noqa: BLE001 - one failed row must not stop the part's other rows
            traceback.print_exc()
            self.add(**what, error=error_line(e))

    def save(self, error: str | None = None) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": self.rows, "error": error}, indent=1))
        tmp.replace(self.path)


def error_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".strip()


def part_main(parts: dict) -> None:
    """``python FILE --part PART RESULT_JSON WORK_DIR [--cpu] [--quick]``: run one of ``parts`` (name -> function)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", required=True, choices=sorted(parts))
    parser.add_argument("result", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    record, mode = PartRecord(args.result), Mode(args.cpu, args.quick)
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        if args.part in os.environ.get(HANG_ENV, "").split(","):
            time.sleep(3600)
        if args.part in os.environ.get(FAIL_ENV, "").split(","):
            raise RuntimeError(f"forced failure ({FAIL_ENV})")
        parts[args.part](record, mode, args.work)
        if record.failures:
            first = next(r["error"] for r in record.rows if "error" in r)
            raise RuntimeError(f"{record.failures} of {len(record.rows)} rows failed; the first: {first}")
    except Exception as e:  # noqa: BLE001 - reported to the run as this part's one error line
        traceback.print_exc()
        record.save(error=error_line(e))
        sys.exit(1)


def last_error(lines) -> str:
    """The line that says what went wrong: the last one naming an error, else the last one."""
    lines = list(lines)
    named = [line for line in lines if re.search(r"error|exception|failed", line, re.IGNORECASE)]
    return (named or lines or ["(no output)"])[-1][:300]


# ----------------------------------------------------------------------------- the run: parts, limits, results


def run_part(part: Part, limit: float, out: Path, mode: Mode) -> dict:
    """Run one part in a new process group under ``limit`` seconds; its result, whatever happened."""
    result_path, log_path = out / "parts" / f"{part.name}.json", out / "logs" / f"{part.name}.log"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, HERE / part.file, "--part", part.name, result_path, out / "work" / part.name,
           *(["--cpu"] if mode.cpu else []), *(["--quick"] if mode.quick else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(list(map(str, cmd)), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(proc)  # also what it started: torchrun's workers, pytest's subprocesses
    seconds = time.perf_counter() - started
    saved = json.loads(result_path.read_text()) if result_path.exists() else {"rows": [], "error": None}
    log_tail = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    error = None
    if timed_out:
        error = f"timed out after {limit:.0f} s; last output: {(log_tail or ['(none)'])[-1][:200]}"
    elif proc.returncode != 0:
        error = saved.get("error") or f"exited {proc.returncode}: {last_error(log_tail)}"
    return {"name": part.name, "title": part.title, "status": "FAILED" if error else "ok", "seconds": seconds,
            "limit_s": limit, "error": error, "rows": saved["rows"], "log": str(log_path.relative_to(out))}


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def not_run(part: Part, why: str) -> dict:
    return {"name": part.name, "title": part.title, "status": "FAILED", "seconds": 0.0, "limit_s": 0, "error": why,
            "rows": [], "log": None}


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}",
            *(f"| {' | '.join(cell(row.get(c)) for c in columns)} |" for row in rows)]


def device_name(results: dict) -> str:
    env = next((p for p in results["parts"] if p["name"] == "env"), {"rows": []})
    return next((r["value"] for r in env["rows"] if r.get("item") == "device"), "unknown (the env part did not run)")


def write_results(out: Path, results: dict) -> None:
    failed = [p["name"] for p in results["parts"] if p["status"] != "ok"]
    results["failed"] = failed
    lines = [f"# vqgen GPU check: {device_name(results)}", "",
             f"`{results['command']}`, started {results['started']}, {results['seconds']:.0f} s in all; "
             + (f"FAILED: {', '.join(failed)}." if failed else "every part ok."), "",
             *table([{"part": p["name"], "status": p["status"], "seconds": p["seconds"], "limit s": p["limit_s"],
                      "error": p["error"]} for p in results["parts"]])]
    for p in results["parts"]:
        lines += ["", f"## {p['name']}: {p['title']}", "",
                  f"{p['status']} in {p['seconds']:.1f} s" + (f": {p['error']}" if p["error"] else "")
                  + (f" (log: `{p['log']}`)" if p["log"] else "")]
        if p["rows"]:
            lines += ["", *table(p["rows"])]
    for name, text in (("results.md", "\n".join(lines) + "\n"), ("results.json", json.dumps(results, indent=1))):
        (out / f"{name}.tmp").write_text(text)
        (out / f"{name}.tmp").replace(out / name)


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"gpu_check.sh: {message}\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineErrors(prog="bash bench/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for results.md, results.json, logs/ and work/")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps: about 2 minutes on a GPU")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (gloo, no CUDA): checks the script")
    parser.add_argument("--only", help=f"comma-separated parts to run (default: all): {', '.join(PART_NAMES)}")
    parser.add_argument("--budget", type=float, help="seconds after which no part starts (default: full 480, "
                                                      "--quick 180, --cpu 3600)")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                        help="another time limit for one part (repeatable)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else PART_NAMES
    limits = dict(item.partition("=")[::2] for item in args.limit)
    for name in [*only, *limits]:
        if name not in PART_NAMES:
            parser.error(f"unknown part {name!r}; the parts: {', '.join(PART_NAMES)}")
    try:
        args.limits = {name: float(seconds) for name, seconds in limits.items()}
    except ValueError:
        parser.error("--limit takes PART=SECONDS, e.g. --limit sampling=300")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"OUT_DIR {args.out_dir} exists and is not a folder")
    args.parts = [p for p in PARTS if p.name in only]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    mode = Mode(args.cpu, args.quick)
    out = args.out_dir.resolve()
    for sub in ("parts", "logs", "work"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    budget = args.budget or BUDGETS["cpu" if mode.cpu else "quick" if mode.quick else "full"]
    started = time.perf_counter()
    results = {"command": " ".join(["bash bench/gpu_check.sh", *argv]), "mode": {"cpu": mode.cpu, "quick": mode.quick},
               "budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": 0.0, "parts": []}
    for part in args.parts:
        left = budget - (time.perf_counter() - started)
        own = CPU_LIMIT if mode.cpu else part.limits[mode.quick]
        limit = min(args.limits.get(part.name, own), left)
        print(f"[{time.perf_counter() - started:5.0f} s] {part.name} (limit {limit:.0f} s) ...", end=" ", flush=True)
        if limit < 5:
            result = not_run(part, f"not run: the run's {budget:.0f} s budget was spent")
        else:
            result = run_part(part, limit, out, mode)
        print(f"{result['status']} in {result['seconds']:.1f} s" + (f": {result['error']}" if result["error"] else ""),
              flush=True)
        results["parts"].append(result)
        results["seconds"] = time.perf_counter() - started
        write_results(out, results)  # after every part: a run stopped from outside keeps what it has
    print(f"wrote {out / 'results.md'} and results.json ({results['seconds']:.0f} s)")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
