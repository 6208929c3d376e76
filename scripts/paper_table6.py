"""The paper's Table 6 layout (multimodal math reasoning, multiple-choice questions only) from math run folders, with
the paper's published numbers beside ours.

    python scripts/paper_table6.py                                    # every runs/paper/*_math folder
    python scripts/paper_table6.py runs/paper/qwen2_5_vl_7b_math > table6.md

One table per run folder (`configs/paper/mmk12.yaml`: `runs/paper/<size>_math/<stage>/`), rows cold start, SFT, SFT-M,
SFT-EM, GRPO, from each stage's newest `metrics.json` (as `scripts/paper_table.py`); a missing run or benchmark shows
as "-". Columns: the MC-only accuracy of MMMU-val, MathVista-mini, MathVision, MathVerse-mini, WeMath and MMK12-test
(`configs/eval/math.yaml`), their mean ("Avg", only when all six are there), then WeMath's official strict / loose
four-dimensional scores (not in the average) and the paper's average for the row.

What the paper publishes (reference `paper.md` §4, Table 6; check against the PDF before quoting):
- Averages [N2]: SFT 53.88, SFT-M 55.32, GRPO 55.44 (a 7B model per [N1], [N2]); cold start and SFT-EM not found.
- Per benchmark only the best value of any row [W]: MMMU-val 52.56, MathVista-mini 74.07, MathVision 32.96,
  WeMath 62.3; none for MathVerse. Shown as the last row, "paper, best of any row".
- Unconfirmed: that the six benchmarks are these (MMK12-test is the project's assumption), and which WeMath metric
  62.3 is: probably plain accuracy over the multiple-choice rows, so our "WeMath" column and the average use that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.paper_table import cell, markdown, mean_of_all  # noqa: E402
from scripts.pipeline_report import METHODS, latest_metrics, run_metrics  # noqa: E402

COLUMNS = [  # (metric in metrics.json without `val/`, column title, the paper's best value of any row [W])
    ("mmmu/acc", "MMMU-val", 52.56),
    ("mathvista/acc", "MathVista-mini", 74.07),
    ("mathvision/acc", "MathVision", 32.96),
    ("mathverse/acc", "MathVerse-mini", None),
    ("wemath/acc", "WeMath", 62.3),
    ("mmk12/acc", "MMK12-test", None),
]
EXTRA = [("wemath/score_strict", "WeMath strict"), ("wemath/score_loose", "WeMath loose")]  # not averaged
PAPER_AVG = {"sft": 53.88, "sft_m": 55.32, "grpo": 55.44}  # [N2]


def table(run: Path) -> str:
    """Table 6 for one math run folder (e.g. runs/paper/qwen2_5_vl_7b_math)."""
    head = ["method", *(title for _, title, _ in COLUMNS), "Avg", *(title for _, title in EXTRA), "Avg (paper)"]
    rows = []
    for stage, label in METHODS:
        metrics = run_metrics(latest_metrics(run / stage))
        ours = [metrics.get(key) for key, _, _ in COLUMNS]
        values = [*ours, mean_of_all(ours), *(metrics.get(key) for key, _ in EXTRA), PAPER_AVG.get(stage)]
        rows.append([label, *map(cell, values)])
    best = [paper for _, _, paper in COLUMNS]
    rows.append(["paper, best of any row", *map(cell, [*best, None, *(None for _ in EXTRA), None])])
    return markdown(head, rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="math run folders; default: every runs/paper/*_math")
    args = parser.parse_args(argv)
    runs = [Path(run) for run in args.runs] or sorted(Path("runs/paper").glob("*_math"))
    if not runs:
        raise SystemExit("no math run folder given or found under runs/paper/ (configs/paper/mmk12.yaml)")
    text = "\n".join(f"### Table 6, {run}\n\n{table(run)}" for run in runs)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
