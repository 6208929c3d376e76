"""Convert MMK12 (`FanqingM/MMK12` train parquet) plus a JSONL of model-written responses into the official DC-SFT
training files, keeping only responses whose final answer verifies (`datamodules/math_data.py`).

    python scripts/convert_mmk12.py data/mmk12/train.parquet responses.jsonl --out data/dcsft_math
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.benchmarks.base import image_from_cell  # noqa: E402
from datamodules.benchmarks.math_benchmarks import read_rows  # noqa: E402
from datamodules.math_data import read_responses, write_math_files  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mmk12", help="MMK12 train parquet (id, subject, image, question, answer)")
    parser.add_argument("responses", help='JSONL of {"id": ..., "response": ...}')
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cold-start", type=int, default=400, help="cold-start items (paper: 400)")
    parser.add_argument("--post-train", type=int, default=6400, help="post-training items (paper: 6,400)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    args = parser.parse_args(argv)
    path = Path(args.mmk12)
    rows = read_rows("mmk12", path, ["id", "image", "question", "answer"])
    for row in rows:
        row["image"] = image_from_cell(row["image"], path.parent)
    counts = write_math_files(
        rows, read_responses(args.responses), args.out, args.cold_start, args.post_train, args.seed
    )
    print(", ".join(f"{key} {value}" for key, value in counts.items()))
    return counts


if __name__ == "__main__":
    main()
