"""Convert RefCOCO / RefCOCO+ / RefCOCOg (VLM-R1 JSON, lmms-lab parquet or refer toolkit) into the official DC-SFT
training files (`datamodules/grounding_data.py`): a seeded cold-start set and a post-training set in both forms.

    python scripts/convert_refcoco.py data/vlm_r1/refcoco_train.json --out data/dcsft_rec \\
        --image-root /training/coco/train2014/=data/coco/train2014/
    python scripts/convert_refcoco.py "data/refer/refcoco/refs(unc).p" --split train --out data/dcsft_rec \\
        --image-root =data/coco/train2014/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.benchmarks.grounding_readers import RefCOCO  # noqa: E402
from datamodules.grounding_data import write_dcsft_files  # noqa: E402
from datamodules.images import OFFICIAL_TRAIN_MAX_PIXELS  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="refcoco_train.json(l), a lmms-lab parquet file or refs(unc).p")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--prefix", default="refcoco", help="file name prefix (default: refcoco)")
    parser.add_argument("--split", default=None, help="refer layout: the split to convert (train)")
    parser.add_argument("--instances", default=None, help="refer layout: instances.json (default: beside the .p)")
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="PREFIX=FOLDER",
        help="map an image path prefix to a local folder (repeatable; refer layout: =FOLDER)",
    )
    parser.add_argument("--cold-start", type=int, default=400, help="cold-start items (paper: 400)")
    parser.add_argument("--post-train", type=int, default=None, help="post-training items (default: all the rest)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    parser.add_argument(
        "--box-frame",
        choices=["original", "resized"],
        default="original",
        help="original: DC-SFT's original-image pixels; resized: Qwen2.5-VL's resized-image pixels",
    )
    parser.add_argument("--max-pixels", type=int, default=OFFICIAL_TRAIN_MAX_PIXELS, help="resized frame only")
    parser.add_argument("--min-pixels", type=int, default=3136, help="resized frame only")
    args = parser.parse_args(argv)
    roots = dict(item.split("=", 1) for item in args.image_root)
    bench = RefCOCO(args.input, name=args.prefix, image_root=roots, split=args.split, instances=args.instances)
    counts = write_dcsft_files(
        bench.records(),
        args.out,
        prefix=args.prefix,
        cold_start=args.cold_start,
        post_train=args.post_train,
        seed=args.seed,
        box_frame=args.box_frame,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )
    for name, n in counts.items():
        print(f"{Path(args.out) / f'{args.prefix}_{name}.json'}: {n} items")
    return counts


if __name__ == "__main__":
    main()
