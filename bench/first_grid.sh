#!/usr/bin/env bash
# README command 1's four stages, each timed, optionally beside an older commit in the same run.
#
#   bash bench/first_grid.sh [--amp auto|off|bf16] [--data DATA] [--compare REV] [WORK_FOLDER]
#
#   --amp off       train in float32 (what a CPU without bfloat16 does with the default --amp auto)
#   --data DATA     the dataset of every stage (default mnist5k): e.g. a folder of photos, to time the
#                   photo pipeline at its defaults
#   --compare REV   also run the four stages of git revision REV (unpacked under WORK_FOLDER/src-REV, run
#                   with this checkout's interpreter), stage by stage in turn with the current tree, so
#                   that both meet the same machine pace; prints both times and their ratio, per stage,
#                   for the three training stages together and for all four
#   --vqvae-args A  extra train-vqvae options of the current tree's run (e.g. "--quantizer rvq"), not REV's
#   --prior-args A  the same for train-prior (e.g. "--depth-heads")
#
# Run it from the repository root after the install, on an otherwise idle machine. PYTHON (default
# .venv/bin/python) runs vqgen. The table ends with what each run gives: validation PSNR and codes used
# of the VQ-VAE, validation bits per code of the prior.
set -euo pipefail
amp=auto
data=mnist5k
compare=
vqvae_args=()
prior_args=()
work=first-grid
while [ $# -gt 0 ]; do
  case "$1" in
    --amp) amp=$2; shift 2 ;;
    --compare) compare=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --vqvae-args) read -r -a vqvae_args <<< "$2"; shift 2 ;;
    --prior-args) read -r -a prior_args <<< "$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "first_grid.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) work=$1; shift ;;
  esac
done
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || { echo "first_grid.sh: no interpreter at $python (install first, or set PYTHON)" >&2; exit 2; }
case "$python" in /*) ;; */*) python=$(pwd)/$python ;; esac
here=$(pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)  # each run starts in its own source folder: `python -m` puts the cwd first on sys.path

runs=(current)
declare -A src=([current]=$here)
if [ -n "$compare" ]; then
  git rev-parse --verify -q "$compare^{commit}" > /dev/null \
    || { echo "first_grid.sh: --compare $compare is not a commit of this repository" >&2; exit 2; }
  old="$work/src-$compare"
  rm -rf "$old" && mkdir -p "$old"
  git archive "$compare" | tar -x -C "$old"
  runs+=("$compare")
  src[$compare]=$(cd "$old" && pwd)
fi

declare -A seconds
stage() {  # stage NAME ARGS...: run NAME for every run, in turn; ARGS may use @OUT@ for the run's folder
  local name=$1; shift
  local run out start end args
  for run in "${runs[@]}"; do
    out="$work/$run"
    mkdir -p "$out"
    args=("${@//@OUT@/$out}")
    if [ "$run" = current ] && [ "$name" = train-vqvae ]; then args+=("${vqvae_args[@]}"); fi
    if [ "$run" = current ] && [ "$name" = train-prior ]; then args+=("${prior_args[@]}"); fi
    start=$(date +%s.%N)
    if ! (cd "${src[$run]}" && PYTHONPATH="${src[$run]}" "$python" -m vqgen "${args[@]}") > "$out/$name.log" 2>&1; then
      echo "$name ($run) failed: $(tail -n 1 "$out/$name.log") (log: $out/$name.log)" >&2
      exit 1
    fi
    end=$(date +%s.%N)
    seconds[$run,$name]=$("$python" -c "print(f'{$end - $start:.1f}')")
  done
}

case "$data" in mnist5k|mnist|fashion-mnist|cifar10) ;; *) data=$(cd "$data" && pwd) ;; esac  # each run has its own cwd
echo "four stages of README command 1, --data $data --amp $amp, in $work; CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
stage train-vqvae train-vqvae --data "$data" --amp "$amp" --out @OUT@/vqvae.safetensors
stage extract-codes extract-codes @OUT@/vqvae.safetensors --data "$data" --out @OUT@/codes.safetensors
stage train-prior train-prior @OUT@/codes.safetensors --amp "$amp" --out @OUT@/prior.safetensors
stage sample sample @OUT@/prior.safetensors --n 64 --out @OUT@/samples

"$python" - "$work" "${runs[@]}" <<PY
import json, sys
from pathlib import Path
work, runs = Path(sys.argv[1]), sys.argv[2:]
seconds = {$(for key in "${!seconds[@]}"; do printf '"%s": %s, ' "$key" "${seconds[$key]}"; done)}
stages = ["train-vqvae", "extract-codes", "train-prior", "sample"]
def last(path):
    lines = Path(path).read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}
head = "| stage | " + " | ".join(f"{r} (s)" for r in runs) + (f" | current / {runs[1]} |" if len(runs) > 1 else " |")
print(head)
print("|---" * (len(runs) + 1 + (len(runs) > 1)) + "|")
training = ["train-vqvae", "extract-codes", "train-prior"]
for name in stages + ["training stages", "total"]:
    parts = {"total": stages, "training stages": training}.get(name, [name])
    values = [sum(seconds[f"{r},{s}"] for s in parts) for r in runs]
    ratio = f" | {values[0] / values[1]:.2f} |" if len(runs) > 1 else " |"
    print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + ratio)
for r in runs:
    v, p = last(work / r / "vqvae.metrics.jsonl"), last(work / r / "prior.metrics.jsonl")
    print(f"{r}: VQ-VAE {v.get('val_psnr', float('nan')):.2f} dB, {v.get('val_codes_used')}/{v.get('val_num_codes')} "
          f"codes used; prior {p.get('best_val_bits_per_code', float('nan')):.3f} bits/code; "
          f"samples: {work / r / 'samples' / 'grid.png'}")
PY
