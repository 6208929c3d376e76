#!/usr/bin/env bash
# The test command: install everything (scripts/setup.sh), lint, check formatting, then run the tests in two phases:
# the fast suite, then the `slow` tests (multi-process DDP and multi-fit runs, ~1-2 minutes together). Tests marked
# `demo` (they build the embedded demo model, minutes) stay out; run them with `pytest -m demo`.
# Extra arguments go to both pytest phases, e.g. `bash scripts/test.sh -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest -q -p no:cacheprovider --timeout 600 "$@"
python -m pytest -q -p no:cacheprovider --timeout 600 -m "slow and not demo" "$@"
