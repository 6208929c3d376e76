"""Ref-L4's accuracy per class from one evaluation's predictions file, worst classes first, as markdown.

    python scripts/ref_l4_classes.py runs/paper/qwen2_5_vl_7b_rec/sft_em/version_0/predictions/ref_l4/<epoch-step>.jsonl

Each prediction row of the `RefL4` benchmark carries its `category` (`ori_category_id`) and its continuous IoU
(`values.ciou`); classes are merged and scored as Ref-L4's official evaluation does (`scoring.refl4_class_accuracy`:
accuracy at IoU > 0.5, mAcc over 0.50:0.05:0.95, in %). The last line gives the means over classes, the same numbers
as `val/ref_l4/class_acc` and `class_macc`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.scoring import refl4_class_accuracy  # noqa: E402


def class_table(path: Path, top: int | None = None) -> str:
    """Markdown table of the per-class accuracies in a predictions JSONL (worst first; `top`: only that many)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or any(row.get("category") is None for row in rows):
        raise SystemExit(f"{path}: not a Ref-L4 predictions file with a `category` per row")
    result = refl4_class_accuracy([row["category"] for row in rows], [row["values"]["ciou"] for row in rows])
    ranked = sorted(result["classes"].items(), key=lambda kv: (kv[1]["acc"], kv[1]["macc"], kv[0]))
    lines = ["| class | n | acc (IoU > 0.5) | mAcc |", "|---|---|---|---|"]
    lines += [f"| {name} | {c['n']} | {c['acc']:.2f} | {c['macc']:.2f} |" for name, c in ranked[:top]]
    lines.append(
        f"\n{len(ranked)} classes, {len(rows)} annotations; mean over classes: acc {result['mean_acc']:.2f}, "
        f"mAcc {result['mean_macc']:.2f}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="a Ref-L4 predictions JSONL written by the evaluation callback")
    parser.add_argument("--top", type=int, default=None, help="print only the N worst classes")
    args = parser.parse_args(argv)
    text = class_table(Path(args.predictions), args.top)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
