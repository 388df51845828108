#!/usr/bin/env bash
# Run the test suite (CPU; GPU-marked tests skip without CUDA). Builds .venv on first use.
# Extra arguments go to pytest, e.g. `bash run_tests.sh -k miss -x`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
set -euo pipefail
exec python -m pytest "$@"
