"""Export a difficulty selection to the official ms-swift `messages` + `images` JSON, so ms-swift users can train on it.

    python -m datamodules.export_tiers --train-file data/dcsft/imagenet_left_sft.json \\
        --difficulty runs/paper/qwen2_5_vl_7b/difficulty/difficulty.jsonl --selection sft_em --out imagenet_em_sft_7b.json

Rows keep their original order and their original (un-remapped) image paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules.difficulty_file import check_items, check_matches, item_key, read_difficulty
from datamodules.formats import read_records, record_to_sample
from datamodules.tiers import PRESETS, Selection, apply_selection, export_messages_json, records_to_messages


def export(train_file: str, difficulty_file: str, out: str, selection: Selection) -> int:
    """Write the rows of `train_file` that `selection` keeps to `out`; returns the number of rows written."""
    records = read_records(train_file)
    samples = [record_to_sample(r, i, Path(train_file), None) for i, r in enumerate(records)]
    ids = [s.id for s in samples]
    difficulty = read_difficulty(difficulty_file)
    check_matches(ids, difficulty, train_file, difficulty_file)
    check_items({s.id: item_key(s.solution, s.images) for s in samples}, difficulty, train_file, difficulty_file)
    keep = set(apply_selection(ids, difficulty, selection))
    rows = []
    for sample, record in zip(samples, records):
        if sample.id not in keep:
            continue
        if "messages" in record:
            rows.append({"messages": record["messages"], "images": record.get("images", [])})
        else:
            rows.extend(records_to_messages([record]))
    export_messages_json(rows, out)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-file", required=True, help="official training file (messages or problem format)")
    parser.add_argument("--difficulty", required=True, help="difficulty JSONL from `train.py predict`")
    parser.add_argument("--out", required=True, help="output JSON (ms-swift messages + images)")
    parser.add_argument("--selection", default=None, choices=sorted(PRESETS), help="tier preset (default sft_em)")
    parser.add_argument("--tiers", nargs="+", default=None, help="explicit tiers instead of --selection")
    parser.add_argument("--pass-rate-range", nargs=2, type=float, default=None, metavar=("LO", "HI"))
    parser.add_argument("--hard-share", type=float, default=0.0, help="share of hard items mixed in (Fig. 5: 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    preset = args.selection or (None if args.tiers or args.pass_rate_range else "sft_em")
    rng = tuple(args.pass_rate_range) if args.pass_rate_range else None
    selection = Selection(
        preset=preset, tiers=args.tiers, pass_rate_range=rng, hard_share=args.hard_share, seed=args.seed
    )
    n = export(args.train_file, args.difficulty, args.out, selection)
    print(f"wrote {n} rows to {args.out} ({selection.describe()})")


if __name__ == "__main__":
    main()
