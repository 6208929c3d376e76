"""Ref-L4's class-level view: accuracy and mAcc per object class, and their average over classes.

Why: Ref-L4 reports, besides annotation-level accuracy, the "Average class-level acc" and "mAcc" over its 365
classes, so that frequent classes (person, car) do not dominate; the per-class numbers show which kinds of objects a
training recipe helps or hurts. Our re-implementation of JierunChen/Ref-L4 `ref_l4/evaluation.py::
RefL4Evaluator.evaluate` (the "Average class-level evaluation" block, default thresholds): annotations are grouped by
`ori_category_id` after the official `mapping_dict` merges RefCOCO category ids into Objects365 ones; a class's
accuracy is the share of its annotations with IoU **>** 0.5 (strict, as the official `iou > th`), its mAcc the mean
over the thresholds 0.50:0.05:0.95; the averages are plain means over classes. Values are percentages, as printed
officially. Deviation: no classes (empty input) gives None averages where the official `statistics.mean` raises.

Tests: `python -m pytest tests/test_grounding.py -q -k class`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The official `[i / 100 for i in range(50, 100, 5)]` (true division is correctly rounded: the same floats).
REFL4_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

# The official `mapping_dict`, verbatim: RefCOCO (COCO) category ids -> the Objects365 class they are merged into.
# Several map to one class (refcoco_6 and _16 -> o365_56; _51 and _64 -> o365_26; _61 and _67 -> o365_98), and
# refcoco_37 maps to the official placeholder o365_100000 ("the actual value is not provided").
REFCOCO_TO_O365 = {
    "refcoco_1": "o365_1",
    "refcoco_10": "o365_41",
    "refcoco_11": "o365_177",
    "refcoco_13": "o365_128",
    "refcoco_14": "o365_250",
    "refcoco_15": "o365_25",
    "refcoco_16": "o365_56",
    "refcoco_17": "o365_140",
    "refcoco_18": "o365_93",
    "refcoco_19": "o365_79",
    "refcoco_2": "o365_47",
    "refcoco_20": "o365_100",
    "refcoco_21": "o365_97",
    "refcoco_22": "o365_145",
    "refcoco_23": "o365_296",
    "refcoco_24": "o365_179",
    "refcoco_25": "o365_181",
    "refcoco_27": "o365_39",
    "refcoco_28": "o365_40",
    "refcoco_3": "o365_6",
    "refcoco_31": "o365_13",
    "refcoco_32": "o365_44",
    "refcoco_33": "o365_194",
    "refcoco_34": "o365_220",
    "refcoco_35": "o365_119",
    "refcoco_36": "o365_174",
    "refcoco_37": "o365_100000",
    "refcoco_38": "o365_155",
    "refcoco_39": "o365_138",
    "refcoco_4": "o365_59",
    "refcoco_40": "o365_114",
    "refcoco_41": "o365_146",
    "refcoco_42": "o365_147",
    "refcoco_43": "o365_205",
    "refcoco_44": "o365_9",
    "refcoco_46": "o365_36",
    "refcoco_47": "o365_11",
    "refcoco_48": "o365_89",
    "refcoco_49": "o365_85",
    "refcoco_5": "o365_115",
    "refcoco_50": "o365_94",
    "refcoco_51": "o365_26",
    "refcoco_52": "o365_113",
    "refcoco_53": "o365_83",
    "refcoco_54": "o365_266",
    "refcoco_55": "o365_104",
    "refcoco_56": "o365_142",
    "refcoco_57": "o365_153",
    "refcoco_58": "o365_235",
    "refcoco_59": "o365_144",
    "refcoco_6": "o365_56",
    "refcoco_60": "o365_151",
    "refcoco_61": "o365_98",
    "refcoco_62": "o365_3",
    "refcoco_63": "o365_51",
    "refcoco_64": "o365_26",
    "refcoco_65": "o365_76",
    "refcoco_67": "o365_98",
    "refcoco_7": "o365_117",
    "refcoco_70": "o365_154",
    "refcoco_72": "o365_37",
    "refcoco_73": "o365_74",
    "refcoco_74": "o365_116",
    "refcoco_75": "o365_133",
    "refcoco_76": "o365_107",
    "refcoco_77": "o365_62",
    "refcoco_78": "o365_164",
    "refcoco_79": "o365_135",
    "refcoco_8": "o365_66",
    "refcoco_80": "o365_278",
    "refcoco_81": "o365_82",
    "refcoco_82": "o365_134",
    "refcoco_84": "o365_19",
    "refcoco_85": "o365_95",
    "refcoco_86": "o365_31",
    "refcoco_87": "o365_170",
    "refcoco_88": "o365_70",
    "refcoco_89": "o365_328",
    "refcoco_9": "o365_22",
    "refcoco_90": "o365_227",
}


def refl4_class(category: str) -> str:
    """Ref-L4's class of an annotation: its `ori_category_id`, a RefCOCO id replaced by its Objects365 class."""
    return REFCOCO_TO_O365.get(category, category)


def refl4_class_accuracy(
    categories: Sequence[str], ious: Sequence[float], thresholds: Sequence[float] = REFL4_THRESHOLDS
) -> dict[str, Any]:
    """Per-class accuracy (IoU > 0.5) and mAcc (thresholds 0.50:0.05:0.95), in %, and their means over classes.

    `categories`: each annotation's `ori_category_id` (e.g. "o365_64", "refcoco_1"); `ious`: its continuous IoU
    (`scoring.continuous_iou`, 0 for an answer without a box). Returns {"classes": {class: {"n", "acc", "macc"}}
    in order of first appearance, "mean_acc", "mean_macc"} (the official "Average class-level acc iou 0.5" and
    "Average class-level macc iou 0.5:0.95").
    """
    if len(categories) != len(ious):
        raise ValueError(f"refl4_class_accuracy: {len(categories)} categories but {len(ious)} IoUs")
    groups: dict[str, list[float]] = {}
    for category, value in zip(categories, ious):
        groups.setdefault(refl4_class(category), []).append(value)

    def acc(values: list[float], threshold: float) -> float:
        return 100.0 * sum(v > threshold for v in values) / len(values)

    classes = {
        name: {
            "n": len(values),
            "acc": acc(values, 0.5),
            "macc": sum(acc(values, t) for t in thresholds) / len(thresholds),
        }
        for name, values in groups.items()
    }

    def mean(key: str) -> float | None:
        return sum(c[key] for c in classes.values()) / len(classes) if classes else None

    return {"classes": classes, "mean_acc": mean("acc"), "mean_macc": mean("macc")}
