#!/usr/bin/env bash
# Regenerate every table and figure at the scale this machine allows.
#   bash run_all.sh                      # profile cpu: no GPU, no hub (the default)
#   bash run_all.sh --profile small      # one GPU;   --profile paper: the paper's scale
#   bash run_all.sh --force --only no_free_lunch
# Builds .venv on first use. Records: results/<experiment>/<profile>/<run>.json; tables: paper_tables/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
set -euo pipefail
exec python -m experiments.run_all "$@"
