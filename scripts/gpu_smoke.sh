#!/usr/bin/env bash
# GPU smoke check, one command, <= 8 minutes on one GPU (see scripts/gpu_smoke.py for the parts):
#   bash scripts/gpu_smoke.sh              # with whatever python is active (a CUDA PyTorch); installs nothing
#   PYTHON=.venv/bin/python bash scripts/gpu_smoke.sh --quick
# Parts whose packages are missing (DeepSpeed, vLLM, pytest, ...) are skipped with a line naming them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 480 "${PYTHON:-python3}" scripts/gpu_smoke.py "$@"
