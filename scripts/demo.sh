#!/usr/bin/env bash
# The main job on the embedded default (no GPU, no model hub): install everything, then the DC-SFT pipeline
#   cold start -> difficulty estimation -> SFT, SFT-M, SFT-EM (equal steps) and GRPO -> ID/OOD accuracy table + chart.
# Every stage is a visible `python train.py ...` call; wall times go to runs/demo/timings.jsonl and the table to
# runs/demo/results.md and runs/demo/results.png. A previous runs/demo is moved to runs/demo.prev.
# Set STAGES="cold_start difficulty sft sft_m sft_em grpo" to run a subset (e.g. STAGES="cold_start sft" for issue 2's job).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
STAGES="${STAGES:-cold_start difficulty sft sft_m sft_em grpo}"
if [[ " $STAGES " == *" cold_start "* ]] && [ -d runs/demo ]; then
  rm -rf runs/demo.prev && mv runs/demo runs/demo.prev
fi
mkdir -p runs/demo
stage() {  # stage NAME SUBCOMMAND: run `python train.py SUBCOMMAND --config configs/demo/NAME.yaml`, record wall time
  local name=$1 sub=$2 start end
  [[ " $STAGES " == *" $name "* ]] || return 0
  echo "=== python train.py $sub --config configs/demo/$name.yaml"
  start=$(date +%s.%N)
  python train.py "$sub" --config "configs/demo/$name.yaml" --trainer.enable_progress_bar false
  end=$(date +%s.%N)
  python -c "import json,sys; print(json.dumps({'stage': sys.argv[1], 'seconds': float(sys.argv[3]) - float(sys.argv[2])}))" \
    "$name" "$start" "$end" >> runs/demo/timings.jsonl
}
stage cold_start fit
stage difficulty predict
stage sft fit
stage sft_m fit
stage sft_em fit
stage grpo fit
python scripts/pipeline_report.py runs/demo
