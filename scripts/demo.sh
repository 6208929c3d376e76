#!/usr/bin/env bash
# The main job on the embedded default (no GPU, no model hub): install everything, then the DC-SFT pipeline
#   cold start -> difficulty estimation -> SFT, SFT-M, SFT-EM (equal steps) and GRPO -> ID/OOD accuracy table + chart.
# Each stage is one run of configs/runs.yaml (`python scripts/runs.py --print demo/<stage>` shows its command); wall
# times go to runs/demo/timings.jsonl, the table to runs/demo/results.md and the chart to runs/demo/results.png.
# A previous runs/demo is moved to runs/demo.prev.
# STAGES="cold_start difficulty sft sft_m sft_em grpo" runs a subset (e.g. STAGES="cold_start sft").
# After the cold start a sight check (scripts/sight_check.py) tests that the model uses its images; the job ends with
# a summary: the table, the sight check, the tier counts and where the chart is.
# `bash scripts/demo.sh --full` then adds the paper's Table 1 and Fig. 5 over 3 seeds and a 10 % label-noise pipeline
# (scripts/demo_full.py, about 2 more hours on 2 cores; it resumes where it stopped when rerun).
set -euo pipefail
FULL=0
[ "${1:-}" = "--full" ] && FULL=1
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
STAGES="${STAGES:-cold_start difficulty sft sft_m sft_em grpo}"
if [[ " $STAGES " == *" cold_start "* ]] && [ -d runs/demo ]; then
  rm -rf runs/demo.prev && mv runs/demo runs/demo.prev
fi
mkdir -p runs/demo
stage() {  # stage NAME: run demo/NAME from configs/runs.yaml and record its wall time
  local name=$1 start end
  [[ " $STAGES " == *" $name "* ]] || return 0
  echo "=== $(python scripts/runs.py --print "demo/$name")"
  start=$(date +%s.%N)
  python scripts/runs.py "demo/$name"
  end=$(date +%s.%N)
  python -c "import json,sys; print(json.dumps({'stage': sys.argv[1], 'seconds': float(sys.argv[3]) - float(sys.argv[2])}))" \
    "$name" "$start" "$end" >> runs/demo/timings.jsonl
}
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"  # the same thread count every run: same float sums
for name in cold_start difficulty sft sft_m sft_em grpo; do
  stage "$name"
  if [ "$name" = cold_start ] && [[ " $STAGES " == *" cold_start "* ]]; then
    echo "=== python scripts/sight_check.py runs/demo/cold_start/model --reuse-eval"
    python scripts/sight_check.py runs/demo/cold_start/model --reuse-eval
  fi
done
python scripts/pipeline_report.py runs/demo
if [ "$FULL" = 1 ]; then
  python scripts/demo_full.py --run-dir runs/demo
fi
