"""RefCOCO (any layout `RefCOCO` reads) -> the official DC-SFT training files, so the classification pipeline
(difficulty -> tiers -> SFT-M / SFT-EM -> GRPO) runs unchanged on grounding with `scorer: iou` / `rewards: {iou: 1.0}`.

Writes, from a seeded shuffle of the records: a cold-start set (`<prefix>_cold_sft.json`, default 400 items, as the
paper) and a post-training set in both official forms (`<prefix>_left_sft.json`: `messages` + `images`;
`<prefix>_left_grpo.json`: `problem` / `solution` / `image`, same items in the same order). SFT targets are the gold
box as `"[x1, y1, x2, y2]"` with int-truncated values, as the official `infer/sample.py` writes them (not rounded).

Box frame: `original` (DC-SFT: targets in original-image pixels) or `resized` (Qwen2.5-VL's native frame: pixels of
the image after smart resize at the training pixel bounds); evaluate with the same `box_frame`.

    python scripts/convert_refcoco.py data/refcoco/refcoco_train.json --out data/dcsft_rec --image-root data/coco/
"""

from __future__ import annotations

from pathlib import Path

from datamodules.benchmarks.grounding import BOX_FRAMES, GroundingRecord, rec_prompt
from datamodules.convert import seeded_split, stored_image
from datamodules.files import atomic_write_json
from datamodules.images import smart_resize
from datamodules.scoring import rescale_box


def frame_box(record: GroundingRecord, box_frame: str, min_pixels: int, max_pixels: int) -> list[float]:
    """The record's gold box in the training frame."""
    if box_frame not in BOX_FRAMES:
        raise ValueError(f"box_frame must be one of {BOX_FRAMES}, got {box_frame!r}")
    if box_frame == "original":
        return list(record.box)
    hw = (record.height, record.width)
    return rescale_box(record.box, hw, smart_resize(*hw, min_pixels=min_pixels, max_pixels=max_pixels))


def sft_target(box: list[float]) -> str:
    """`[x1, y1, x2, y2]` with int-truncated values (official `sample.py`: `int()`, not `round()`)."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def write_dcsft_files(
    records: list[GroundingRecord],
    out_dir: str | Path,
    prefix: str = "refcoco",
    cold_start: int = 400,
    post_train: int | None = None,
    seed: int = 0,
    box_frame: str = "original",
    min_pixels: int = 3136,
    max_pixels: int = 802816,
) -> dict[str, int]:
    """Write the three files into out_dir; returns the item count of each file."""
    out = Path(out_dir)
    cold, rest = seeded_split(len(records), cold_start, post_train, seed)
    rows: dict[str, list[dict]] = {"cold_sft": [], "left_sft": [], "left_grpo": []}
    for part, indices in (("cold", cold), ("left", rest)):
        for index in indices:
            record = records[index]
            box = frame_box(record, box_frame, min_pixels, max_pixels)
            prompt = record.prompt or rec_prompt(record.expression)
            image = stored_image(record.image, f"{prefix}_{record.id}", out / "images")
            messages = [
                {"role": "user", "content": "<image>" + prompt},
                {"role": "assistant", "content": sft_target(box)},
            ]
            rows[f"{part}_sft"].append({"messages": messages, "images": [image]})
            if part == "left":
                rows["left_grpo"].append({"problem": prompt, "solution": [round(v, 2) for v in box], "image": image})
    for name, content in rows.items():
        atomic_write_json(out / f"{prefix}_{name}.json", content, indent=None)
    return {name: len(content) for name, content in rows.items()}
