#!/usr/bin/env bash
# The main job on the embedded default (no GPU, no model hub): install everything, then the DC-SFT pipeline
#   cold start -> difficulty estimation -> SFT, SFT-M, SFT-EM (equal steps) and GRPO -> ID/OOD accuracy table + chart.
# Each stage is one run of configs/runs.yaml (`python scripts/runs.py --print demo/<stage>` shows its command); wall
# times go to runs/demo/timings.jsonl, the table to runs/demo/results.md and the chart to runs/demo/results.png.
# A previous runs/demo is moved to runs/demo.prev (the grounding demo's runs/demo/grounding stays).
# STAGES="cold_start difficulty sft sft_m sft_em grpo" runs a subset (e.g. STAGES="cold_start sft").
# After the cold start a sight check (scripts/sight_check.py) tests that the model uses its images; the job ends with
# a summary: the table, the sight check, the tier counts and where the chart is.
# `bash scripts/demo.sh --full` then adds the paper's Table 1 and Fig. 5 over 3 seeds and a 10 % label-noise pipeline
# (scripts/demo_full.py, about 2 more hours on 2 cores; it resumes where it stopped when rerun), runs the grounding
# demo below and prints the paper-style Table 2 over both demos (OOD Avg over their four renditions).
# `bash scripts/demo.sh --task grounding` runs the same six stages on the grounding demo instead (easy-vqa shapes on
# canvases, referring expressions, IoU; runs demo/grounding/<stage>, everything under runs/demo/grounding/, the
# previous one moved to runs/demo/grounding.prev); the classification sight check does not apply there. Its model is
# built on first use (demo://smollm2-vl-grounding, about an hour on 2 cores, cached in .cache/demo).
# Once both demos have run, the summary ends with the command that prints their combined Table 2.
set -euo pipefail
FULL=0
TASK=classification
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --task) TASK="${2:-}"; shift ;;
    --task=*) TASK="${1#--task=}" ;;
    *) echo "usage: bash scripts/demo.sh [--task classification|grounding] [--full]" >&2; exit 2 ;;
  esac
  shift
done
case "$TASK" in
  classification) RUN_DIR=runs/demo; PREFIX=demo ;;
  grounding) RUN_DIR=runs/demo/grounding; PREFIX=demo/grounding ;;
  *) echo "--task must be classification or grounding, got '$TASK'" >&2; exit 2 ;;
esac
if [ "$FULL" = 1 ] && [ "$TASK" != classification ]; then
  echo "--full (Table 1, Fig. 5, label noise) exists for the classification demo only" >&2; exit 2
fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
STAGES="${STAGES:-cold_start difficulty sft sft_m sft_em grpo}"
if [[ " $STAGES " == *" cold_start "* ]] && [ -d "$RUN_DIR" ]; then
  rm -rf "$RUN_DIR.prev" && mv "$RUN_DIR" "$RUN_DIR.prev"
  for other in grounding grounding.prev; do  # a classification rerun leaves the grounding demo's runs in place
    if [ "$TASK" = classification ] && [ -d "$RUN_DIR.prev/$other" ]; then
      mkdir -p "$RUN_DIR" && mv "$RUN_DIR.prev/$other" "$RUN_DIR/$other"
    fi
  done
fi
mkdir -p "$RUN_DIR"
stage() {  # stage NAME: run $PREFIX/NAME from configs/runs.yaml and record its wall time
  local name=$1 start end
  [[ " $STAGES " == *" $name "* ]] || return 0
  echo "=== $(python scripts/runs.py --print "$PREFIX/$name")"
  start=$(date +%s.%N)
  python scripts/runs.py "$PREFIX/$name"
  end=$(date +%s.%N)
  python -c "import json,sys; print(json.dumps({'stage': sys.argv[1], 'seconds': float(sys.argv[3]) - float(sys.argv[2])}))" \
    "$name" "$start" "$end" >> "$RUN_DIR/timings.jsonl"
}
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"  # the same thread count every run: same float sums
for name in cold_start difficulty sft sft_m sft_em grpo; do
  stage "$name"
  if [ "$TASK" = classification ] && [ "$name" = cold_start ] && [[ " $STAGES " == *" cold_start "* ]]; then
    echo "=== python scripts/sight_check.py runs/demo/cold_start/model --reuse-eval"
    python scripts/sight_check.py runs/demo/cold_start/model --reuse-eval
  fi
done
python scripts/pipeline_report.py "$RUN_DIR"
TABLE2="python scripts/paper_table.py --demo runs/demo runs/demo/grounding"  # both demos, the paper's Table 2 layout
if [ "$FULL" = 1 ]; then
  python scripts/demo_full.py --run-dir runs/demo
  bash scripts/demo.sh --task grounding
  echo "=== $TABLE2"
  $TABLE2
elif [ -d runs/demo/grpo ] && [ -d runs/demo/grounding/grpo ]; then
  echo "Both demos have run; their combined Table 2: $TABLE2"
fi
