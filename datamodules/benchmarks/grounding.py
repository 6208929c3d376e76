"""Visual grounding benchmarks: RefCOCO / RefCOCO+ / RefCOCOg (ID), Ref-L4 and LISA (OOD), one box per expression.

Scoring (`GroundingBenchmark.score`): the first `[x1, y1, x2, y2]` of the answer (DC-SFT's regex), moved to the
original image when the model answers in the resized frame (`box_frame: resized`, VLM-R1's convention since
2025-06), then **accuracy at DC-SFT IoU >= 0.5** (`val/<name>/acc`, the paper's number) plus, so that conventions can
be compared on the same answers: Ref-L4's official view (continuous IoU, hits at IoU > 0.5 / 0.75 / 0.9, mAcc over
0.50:0.05:0.95, small / medium / large by the gold box's sqrt(w h) < 128 / <= 256 / > 256) and the mean IoUs. An
answer without a box scores 0 and is counted (`no_box`), never a crash.

Layouts (readers in `grounding_readers.py`): VLM-R1's `rec_jsons_processed` JSON / JSONL, the lmms-lab parquet
mirrors, the refer toolkit's `refs(unc).p` + `instances.json`, Ref-L4's parquet files, VLM-R1's `lisa_test.json` and
raw ReasonSeg folders. Reference: `benchmarks_grounding_math.md` §0–§3 of the project's shared reference.
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from datamodules.benchmarks.base import Benchmark, EvalItem, LazyEvalItem, ScoreResult
from datamodules.images import ImageSource, smart_resize
from datamodules.scoring import REFL4_THRESHOLDS, box_problems, continuous_iou, iou, parse_box, rescale_box

REC_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."
BOX_FRAMES = ("original", "resized")


@dataclass
class GroundingRecord:
    """One referring expression: its image, its gold box (xyxy, original pixels) and the image size."""

    id: str
    expression: str
    image: ImageSource
    box: list[float]
    width: int
    height: int
    source: str  # file and record, for error messages
    prompt: str | None = None  # the record's own full prompt (VLM-R1 files); None = REC_PROMPT with the expression
    meta: dict[str, Any] = field(default_factory=dict)


def rec_prompt(expression: str) -> str:
    """The DC-SFT / VLM-R1 grounding prompt; a sentence that already ends in a period gets no second one."""
    expression = expression.strip()
    return REC_PROMPT.format(expression[:-1] if expression.endswith(".") else expression)


def size_class(box: list[float]) -> str:
    """Ref-L4's size groups by sqrt(w h) of the gold box: small < 128 <= medium <= 256 < large."""
    side = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
    return "small" if side < 128 else "medium" if side <= 256 else "large"


class GroundingBenchmark(Benchmark):
    """Shared loading checks and scoring of the grounding readers.

    Args:
        name: benchmark name in metric names (`refcoco_val`, `ref_l4`, `lisa`).
        box_frame: `original` (DC-SFT: the model answers in original-image pixels, as its training targets) or
            `resized` (Qwen2.5-VL's native frame: pixels of the image after smart resize; answers are rescaled to the
            original image before scoring). Use the frame the model was trained in (`scripts/convert_refcoco.py`).
    """

    def __init__(self, name: str, box_frame: str = "original") -> None:
        if box_frame not in BOX_FRAMES:
            raise ValueError(f"{name}: box_frame must be one of {BOX_FRAMES}, got {box_frame!r}")
        self.name = name
        self.box_frame = box_frame
        self.pixel_bounds: tuple[int, int] | None = None  # the evaluation's, set by the callback

    @abstractmethod
    def records(self) -> list[GroundingRecord]:
        """Read and check the files (each reader in `grounding_readers.py`)."""

    def load(self) -> list[EvalItem]:
        items = []
        for record in self.records():
            problems = box_problems(record.box, record.width, record.height)
            if problems:
                raise ValueError(self._error(f"{record.source}: {'; '.join(problems)}; fix or drop the record"))
            meta = {"width": record.width, "height": record.height, "size": size_class(record.box), **record.meta}
            prompt = record.prompt or rec_prompt(record.expression)
            items.append(LazyEvalItem(record.id, prompt, [record.image], [float(v) for v in record.box], meta))
        if not items:
            raise ValueError(self._error("no records"))
        return items

    def resized_hw(self, item: EvalItem) -> tuple[int, int]:
        """(height, width) the evaluation resizes this item's image to: the frame of a `resized` answer."""
        if self.pixel_bounds is None:
            raise RuntimeError(self._error("box_frame 'resized' needs the evaluation's pixel bounds"))
        low, high = self.pixel_bounds
        return smart_resize(item.meta["height"], item.meta["width"], min_pixels=low, max_pixels=high)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        gold, hw = item.gold, (item.meta["height"], item.meta["width"])
        details: dict[str, Any] = {"frame": self.box_frame, "original_hw": list(hw)}
        pred = parse_box(response)
        if pred is not None and self.box_frame == "resized":
            resized = self.resized_hw(item)
            details["resized_hw"] = list(resized)
            pred = rescale_box(pred, resized, hw)
        if pred is None:
            values = {"no_box": 1.0, "iou": 0.0, "ciou": 0.0, "macc": 0.0}
            values |= {f"acc_ciou_{int(t * 100)}": 0.0 for t in (0.5, 0.75, 0.9)}
            return ScoreResult(False, None, values=values, details=details)
        dcsft, plain = iou(pred, gold), continuous_iou(pred, gold)
        values = {"no_box": 0.0, "iou": dcsft, "ciou": plain}
        values |= {f"acc_ciou_{int(t * 100)}": 100.0 * (plain > t) for t in (0.5, 0.75, 0.9)}
        values["macc"] = 100.0 * sum(plain > t for t in REFL4_THRESHOLDS) / len(REFL4_THRESHOLDS)
        details["box"] = [round(v, 2) for v in pred]
        return ScoreResult(dcsft >= 0.5, str(details["box"]), values=values, details=details)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        return {"size": [item.meta["size"]]}
