#!/usr/bin/env bash
# The prepared GPU check: bash bench/gpu_check.sh OUT_DIR [--quick] [--cpu] [--only PART,...]
# (--help for all options). Writes OUT_DIR/results.md and results.json; exits 1 if any part failed.
# Interpreter: $PYTHON, else the checkout's .venv/bin/python, else python3.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    python="$(command -v "$PYTHON" || true)"
    [[ -n "$python" ]] || { echo "gpu_check.sh: PYTHON=$PYTHON: no such interpreter" >&2; exit 2; }
elif [[ -x "$root/.venv/bin/python" ]]; then
    python="$root/.venv/bin/python"
else
    python="$(command -v python3 || true)"
    [[ -n "$python" ]] || { echo "gpu_check.sh: no .venv/bin/python and no python3 on PATH; set PYTHON" >&2; exit 2; }
fi
exec "$python" "$root/bench/gpu_check.py" "$@"
