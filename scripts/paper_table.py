"""The paper's Table 2 layout from a classification run and a grounding run of the same model: ID and OOD accuracy
per method and the headline "OOD Avg" over ImageNet-R, ImageNet-A, Ref-L4 and LISA.

    python scripts/paper_table.py runs/paper/qwen2_5_vl_7b runs/paper/qwen2_5_vl_7b_rec > table2.md
    python scripts/paper_table.py --demo runs/demo runs/demo/grounding   # the embedded demo's stand-ins

With `--demo` the columns are the two embedded demos' test sets (easy-vqa questions and shapes on canvases, each with
a sketch and a texture rendition) and "OOD Avg" is over their four renditions, the stand-ins for the paper's four.

Table 6 (math reasoning) has its own script on the same helpers: `scripts/paper_table6.py`.

Reads each stage's newest `metrics.json` (as `scripts/pipeline_report.py`); a missing run or benchmark shows as "-".
Paper, Qwen2.5-VL-7B, OOD Avg: SFT 57.62, GRPO 59.48, SFT-M 60.41, SFT-EM 62.10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.pipeline_report import METHODS, accuracies, latest_metrics  # noqa: E402

COLUMNS = [  # (task, benchmark name in metrics, column title, OOD?)
    ("cls", "imagenet_val", "ImageNet (ID)", False),
    ("cls", "imagenet_r", "ImageNet-R", True),
    ("cls", "imagenet_a", "ImageNet-A", True),
    ("rec", "refcoco_val", "RefCOCO (ID)", False),
    ("rec", "ref_l4", "Ref-L4", True),
    ("rec", "lisa", "LISA", True),
]
DEMO_COLUMNS = [
    ("cls", "demo_id", "easy-vqa (ID)", False),
    ("cls", "demo_ood_sketch", "easy-vqa sketch", True),
    ("cls", "demo_ood_texture", "easy-vqa texture", True),
    ("rec", "grounding_id", "canvases (ID)", False),
    ("rec", "grounding_ood_sketch", "canvases sketch", True),
    ("rec", "grounding_ood_texture", "canvases texture", True),
]


def cell(value: float | None) -> str:
    """A table cell: two decimals as the paper prints, "-" for a missing run or benchmark."""
    return "-" if value is None else f"{value:.2f}"


def mean_of_all(values: list[float | None]) -> float | None:
    """The mean, or None unless every value is there (an average over fewer benchmarks is not the paper's)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def markdown(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table from its header and rows of cell texts."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def table(cls_run: Path, rec_run: Path, columns: list[tuple[str, str, str, bool]] = COLUMNS) -> str:
    head = ["method", *(title for _, _, title, _ in columns), "OOD Avg"]
    rows = []
    for stage, label in METHODS:
        accs = {"cls": accuracies(latest_metrics(cls_run / stage)), "rec": accuracies(latest_metrics(rec_run / stage))}
        cells = [accs[task].get(bench) for task, bench, _, _ in columns]
        if all(v is None for v in cells):
            continue
        avg = mean_of_all([value for value, (_, _, _, is_ood) in zip(cells, columns) if is_ood])
        rows.append([label, *(cell(v) for v in [*cells, avg])])
    return markdown(head, rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("classification_run", help="e.g. runs/paper/qwen2_5_vl_7b")
    parser.add_argument("grounding_run", help="e.g. runs/paper/qwen2_5_vl_7b_rec")
    parser.add_argument("--demo", action="store_true", help="the embedded demos' test sets instead of the paper's")
    args = parser.parse_args(argv)
    text = table(Path(args.classification_run), Path(args.grounding_run), DEMO_COLUMNS if args.demo else COLUMNS)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
