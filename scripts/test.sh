#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run the default test suite (slow tests excluded; see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
python -m pytest -q -p no:cacheprovider --timeout 600 "$@"
