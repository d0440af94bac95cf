#!/usr/bin/env bash
# README command 1's four stages, each timed: bash bench/first_grid.sh [WORK_FOLDER]
# Run it from the repository root after the install, on an otherwise idle machine.
set -euo pipefail
work=${1:-first-grid}
mkdir -p "$work"
vqgen=${VQGEN:-.venv/bin/vqgen}
total=0
stage() {
  local name=$1; shift
  local start end seconds
  start=$(date +%s.%N)
  if ! "$vqgen" "$@" > "$work/$name.log" 2>&1; then
    echo "$name failed: $(tail -n 1 "$work/$name.log") (log: $work/$name.log)" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  seconds=$(python3 -c "print(f'{$end - $start:.1f}')")
  total=$(python3 -c "print(f'{$total + $seconds:.1f}')")
  printf '%-14s %7s s\n' "$name" "$seconds"
}
stage train-vqvae train-vqvae --data mnist5k --out "$work/vqvae.safetensors"
stage extract-codes extract-codes "$work/vqvae.safetensors" --data mnist5k --out "$work/codes.safetensors"
stage train-prior train-prior "$work/codes.safetensors" --out "$work/prior.safetensors"
stage sample sample "$work/prior.safetensors" --n 64 --out "$work/samples"
printf '%-14s %7s s\n' total "$total"
echo "logs: $work/*.log; samples: $work/samples/grid.png"
