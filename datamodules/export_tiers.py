"""Export a difficulty selection to the official ms-swift `messages` + `images` JSON, so ms-swift users can train on it.

    python -m datamodules.export_tiers --train-file data/dcsft/imagenet_left_sft.json \\
        --difficulty runs/paper/qwen2_5_vl_7b/difficulty/difficulty.jsonl --selection sft_em --out imagenet_em_sft_7b.json

Rows keep their original order and their original (un-remapped) image paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules import tiers
from datamodules.formats import read_records, record_to_sample


def export(train_file: str, difficulty_file: str, out: str, selection: str | None = "sft_em",
           tier_list: list[str] | None = None, pass_rate_range: tuple[float, float] | None = None,
           hard_share: float = 0.0, seed: int = 0) -> int:  # fmt: skip
    """Write the selected rows of `train_file` to `out`; returns the number of rows written."""
    records = read_records(train_file)
    samples = [record_to_sample(r, i, Path(train_file), None) for i, r in enumerate(records)]
    ids = [s.id for s in samples]
    difficulty = tiers.read_difficulty(difficulty_file)
    tiers.check_matches(ids, difficulty, train_file, difficulty_file)
    chosen = tier_list if tier_list is not None else tiers.preset_tiers(selection or "sft")
    keep = set(tiers.select(ids, difficulty, chosen if pass_rate_range is None else None, pass_rate_range,
                            hard_share, seed))  # fmt: skip
    rows = []
    for sample, record in zip(samples, records):
        if sample.id not in keep:
            continue
        if "messages" in record:
            rows.append({"messages": record["messages"], "images": record.get("images", [])})
        else:
            rows.extend(tiers.records_to_messages([record]))
    tiers.export_messages_json(rows, out)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-file", required=True, help="official training file (messages or problem format)")
    parser.add_argument("--difficulty", required=True, help="difficulty JSONL from `train.py predict`")
    parser.add_argument("--out", required=True, help="output JSON (ms-swift messages + images)")
    parser.add_argument("--selection", default="sft_em", choices=sorted(tiers.PRESETS), help="tier preset")
    parser.add_argument("--tiers", nargs="+", default=None, help="explicit tiers instead of --selection")
    parser.add_argument("--pass-rate-range", nargs=2, type=float, default=None, metavar=("LO", "HI"))
    parser.add_argument("--hard-share", type=float, default=0.0, help="share of hard items mixed in (Fig. 5: 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = export(
        args.train_file,
        args.difficulty,
        args.out,
        args.selection,
        args.tiers,
        tuple(args.pass_rate_range) if args.pass_rate_range else None,
        args.hard_share,
        args.seed,
    )
    print(f"wrote {n} rows to {args.out}")


if __name__ == "__main__":
    main()
