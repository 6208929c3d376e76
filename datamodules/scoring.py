"""Scorers shared by evaluation, GRPO rewards and difficulty estimation (one definition per task).

Faithful re-implementations of the official rules, quirks included (official sources named per function):
- DC-SFT `exact()` and `iou()` from `infer/test_dp.py` (classification, grounding), Ref-L4's continuous IoU
  (`ref_l4/overlaps.py`) and class-level accuracy (`ref_l4/evaluation.py`, in `ref_l4_scoring.py`), ReasonSeg
  polygons to boxes (LISA `utils/data_processing.py`, Visual-RFT `gen_box_ann.py`);
- MMMU `parse_multi_choice_response` / `parse_open_response` / `eval_*` from `mmmu/utils/eval_utils.py`, except that
  the parsers return None where the official code calls `random.choice` (the caller draws from a seeded generator);
- MathVista rule-based extraction (`extract_answer.py`) and `normalize_extracted_answer` / `safe_equal`
  (`calculate_score.py`, after commit e999481, i.e. with `int(precision)`), plus an offline stand-in for the GPT
  extractor, `mathvista_fallback_extract`, which is an approximation and is reported as such by the benchmarks.

Run the tests with `python -m pytest tests/test_scoring.py -q`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from datamodules.math_scoring import (  # re-exported: one scoring API (math rules live in math_scoring.py)
    mathvision_correct,
    mathvision_extract,
    mc_infer,
    wemath_extract,
    wemath_four_dim,
    wemath_step_accuracy,
)
from datamodules.ref_l4_scoring import REFL4_THRESHOLDS, refl4_class, refl4_class_accuracy  # re-exported, as above

__all__ = [
    "REFL4_THRESHOLDS",
    "mathvision_correct",
    "mathvision_extract",
    "mc_infer",
    "refl4_class",
    "refl4_class_accuracy",
    "wemath_extract",
    "wemath_four_dim",
    "wemath_step_accuracy",
]

# ----------------------------------------------------------------------------------------------- DC-SFT (exact, IoU)


def exact_match(response: str, solution: str) -> bool:
    """DC-SFT rule: both sides `.strip()` -> `.strip('.')` -> `.lower()`, then equality (nothing else is forgiven)."""
    return response.strip().strip(".").lower() == solution.strip().strip(".").lower()


_NUM = r"(\s*-?\d*\.?\d+\s*)"
_BOX_RE = re.compile(rf"\[{_NUM},\s*{_NUM},\s*{_NUM},\s*{_NUM}\]")  # the official bbox pattern


def parse_box(text: str) -> list[float] | None:
    """First `[a, b, c, d]` number list in the text (the official regex), as floats; None if there is none."""
    match = _BOX_RE.search(text)
    return [float(g) for g in match.groups()] if match else None


def iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with the official DC-SFT convention, kept as is because rewards and tiers were computed with it.

    The intersection treats coordinates as inclusive pixels (x2 - 1, then width + 1) while the union uses the plain
    areas (x2 - x1) * (y2 - y1). A non-positive union (degenerate boxes) gives 0.0 where the official code would
    divide by zero or return a meaningless value.
    """
    ix1, iy1 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    ix2, iy2 = min(box_a[2] - 1, box_b[2] - 1), min(box_a[3] - 1, box_b[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1]) + (box_b[2] - box_b[0]) * (box_b[3] - box_b[1]) - inter
    return float(inter) / union if union > 0 else 0.0


def box_match(response: str, solution: str | Sequence[float], threshold: float = 0.5) -> bool:
    """Grounding: the response's first box has IoU >= threshold with the gold box; no box in the response: wrong."""
    gold = parse_box(solution) if isinstance(solution, str) else [float(v) for v in solution]
    if gold is None:
        raise ValueError(f"box_match: the solution {solution!r} holds no [x1, y1, x2, y2] box")
    pred = parse_box(response)
    return pred is not None and iou(pred, gold) >= threshold


def continuous_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Plain xyxy IoU as Ref-L4's scorer computes it (mmdet `bbox_overlaps`, aligned): overlap clamped at 0, union
    clamped to 1e-6 (degenerate boxes give 0, never a division by zero), no clipping to the image."""
    width = max(min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]), 0.0)
    height = max(min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]), 0.0)
    inter = width * height
    union = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1]) + (box_b[2] - box_b[0]) * (box_b[3] - box_b[1]) - inter
    return float(inter / max(union, 1e-6))


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO / Ref-L4 `[x, y, w, h]` -> `[x1, y1, x2, y2]`."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def rescale_box(box: Sequence[float], from_hw: Sequence[int], to_hw: Sequence[int]) -> list[float]:
    """A box in an image of size `from_hw` (height, width) moved to the same place in an image of size `to_hw`.

    Qwen2.5-VL answers in pixels of the resized input (`images.smart_resize`); VLM-R1 rescales predictions back to the
    original image this way (`test_rec_r1.py::resize_bbox`); DC-SFT trains and scores in original pixels unscaled.
    """
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


LISA_BOX_RULES = ("union", "first_shape")


def lisa_box(annotation: dict, rule: str = "union") -> list[float]:
    """The box of a raw ReasonSeg (LISA) annotation: min / max of polygon points in original pixels.

    `union` (default): over every `target` polygon (LISA's mask is their union; `ignore` and `flag` shapes are not
    the target). `first_shape`: over `shapes[0]` only, whatever its label, as Visual-RFT's `gen_box_ann.py` does (to
    reproduce its files).
    """
    if rule not in LISA_BOX_RULES:
        raise ValueError(f"unknown LISA box rule {rule!r}; valid rules: {', '.join(LISA_BOX_RULES)}")
    shapes = annotation.get("shapes") or []
    chosen = shapes[:1] if rule == "first_shape" else [s for s in shapes if s.get("label") == "target"]
    points = [p for shape in chosen for p in shape.get("points") or []]
    if not points:
        raise ValueError("no target polygon (shapes labelled 'target' with points)")
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def box_problems(box: Sequence[float], width: float | None = None, height: float | None = None) -> list[str]:
    """What is wrong with a gold box (empty when valid): x2 < x1, zero area, outside the image."""
    x1, y1, x2, y2 = box
    out = []
    if x2 < x1 or y2 < y1:
        out.append(f"box {list(box)} has x2 < x1 or y2 < y1 (is it [x, y, w, h]?)")
    elif x2 == x1 or y2 == y1:
        out.append(f"box {list(box)} has zero area")
    if width is not None and height is not None and (x1 < 0 or y1 < 0 or x2 > width + 1 or y2 > height + 1):
        out.append(f"box {list(box)} lies outside the {width:g}x{height:g} image")
    return out


# ----------------------------------------------------------------------------------------------------------- MMMU

_MMMU_PUNCT = (",", ".", "!", "?", ";", ":", "'")


def mmmu_parse_multi_choice(response: str, all_choices: list[str], index2ans: dict[str, str]) -> str | None:
    """Official MMMU letter parser; None where the official code would fall back to `random.choice(all_choices)`.

    Passes, first that yields candidates wins: `(X)` anywhere; ` X ` in the space-padded response (case-sensitive);
    option text as a lower-cased substring, only when the response has more than 5 whitespace tokens. Several
    candidates: the one whose marker occurs last (rfind), ties to the earlier candidate (np.argmax). Punctuation is
    stripped one character class at a time and without a whitespace strip first, so "B. " and "A,." fall through.
    """
    for char in _MMMU_PUNCT:
        response = response.strip(char)
    padded = f" {response} "
    candidates = [c for c in all_choices if f"({c})" in padded]
    markers = {c: f"({c})" for c in candidates}
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in padded]
        markers = {c: f" {c} " for c in candidates}
    lowered = padded.lower()
    if not candidates and len(padded.split()) > 5:
        candidates = [k for k, text in index2ans.items() if text.lower() in lowered]
        markers = {c: index2ans[c].lower() for c in candidates}
        padded = lowered
    if not candidates:
        return None
    positions = [padded.rfind(markers[c]) for c in candidates]
    return candidates[positions.index(max(positions))]


def mmmu_eval_multi_choice(gold: str | list[str], parsed: str) -> bool:
    """String equality; a list gold matches any of its elements."""
    return parsed in gold if isinstance(gold, list) else gold == parsed


_OPEN_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL_TAILS = {":", ",", ".", "!", "?", ";", "'"}
_NUMBER_RES = (  # in the official order: comma-grouped, scientific, plain
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),
)


def _mmmu_normalize_str(text: str) -> list[str | float]:
    """Official normalize_str: a number (commas dropped, anything float() takes) -> round(x, 2); a 1-char string ->
    [" x", "x "] so that single letters do not match trivially; other strings lower-cased."""
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [" " + text, text + " "] if len(text) == 1 else [text]


def _mmmu_key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    pieces = re.split(r"\.\s(?=[A-Z])|\n", response)  # lower-cased already, so only newlines split
    keys = []
    for index, piece in enumerate(pieces):
        indicators = _OPEN_INDICATORS + (("=",) if index == len(pieces) - 1 else ())
        shortest = None
        for indicator in indicators:  # raw substrings: "is " also fires inside "this "
            if indicator in piece:
                tail = piece.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty tail is replaced, as officially
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL_TAILS:
            keys.append(shortest)
    return keys or [response]


def mmmu_parse_open(response: str) -> list[str | float]:
    """Official open-answer candidates (key tails + every number in them, normalised, de-duplicated).

    The official `list(set(...))` order is arbitrary; we return floats first, then strings, each sorted by `str()`,
    which only changes the order (scoring is order-independent).
    """
    keys = _mmmu_key_subresponses(response)
    raw: list[str] = list(keys)
    for key in keys:
        for pattern in _NUMBER_RES:
            raw.extend(pattern.findall(key))
    normalized = [value for item in raw for value in _mmmu_normalize_str(item)]
    return sorted(set(normalized), key=lambda v: (isinstance(v, str), str(v)))


def mmmu_eval_open(gold: str | list[str], parsed: list[str | float]) -> bool:
    """Right if a string candidate contains a string gold, or a float candidate equals a float gold (never mixed)."""
    golds = gold if isinstance(gold, list) else [gold]
    norm_golds = [value for g in golds for value in _mmmu_normalize_str(str(g))]
    for pred in parsed:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in norm_golds):
                return True
        elif pred in norm_golds:
            return True
    return False


# ------------------------------------------------------------------------------------------------------ MathVista


def mathvista_extract(
    response: str, question_type: str, answer_type: str, choices: list[str] | None, quick_extract: bool = False
) -> str | None:
    """Official rule-based shortcuts of `extract_answer`; None where the official pipeline would call its LLM."""
    if response == "":
        return ""
    if question_type == "multi_choice" and choices and response in choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    if quick_extract:
        match = re.search(r'The answer is "(.*)"\.', response)
        if match:
            return match.group(1)
    return None


def _levenshtein(a: str, b: str) -> int:
    """Plain edit distance (unit insert/delete/substitute), as `Levenshtein.distance`."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def mathvista_normalize(
    extraction: Any, choices: list[str] | None, question_type: str, answer_type: str, precision: float | None
) -> str | None:
    """Official `normalize_extracted_answer` (ignore_empty_extractions=False).

    MC: first `(x)` letter upper-cased, an in-range letter -> that choice, else the nearest choice by edit distance
    (first on ties; "" selects the shortest). integer: str(int(float(x))), truncating. float:
    str(round(float(x), int(precision))). list: str(x). Failures -> None. Choices missing for an MC item, or a
    free-form text item (absent from testmini; the official code would crash) -> None.
    """
    if question_type == "multi_choice":
        if not choices:
            return None
        text = extraction.strip() if isinstance(extraction, str) else str(extraction)
        letters = re.findall(r"\(([a-zA-Z])\)", text)
        if letters:
            text = letters[0].upper()
        sequential = [chr(ord("A") + i) for i in range(len(choices))]
        if text in sequential:
            return choices[sequential.index(text)]
        distances = [_levenshtein(text, str(choice)) for choice in choices]
        return choices[distances.index(min(distances))]
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
        if answer_type == "list":
            return str(extraction)
    except Exception:  # the official code swallows every failure into None
        return None
    return None


def mathvista_is_correct(normalized: str | None, gold: str) -> bool:
    """Official `safe_equal`: plain `==`, no strip."""
    return normalized is not None and normalized == gold


_FLOAT_TOKEN = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def mathvista_fallback_extract(response: str, question_type: str, answer_type: str, choices: list[str] | None) -> str:
    """Offline APPROXIMATION of MathVista's GPT extractor (the official pipeline asks GPT-4 to extract the answer); not the official pipeline.

    MC: the last in-range `(X)`, else the last `answer is X` / `Answer: X`, else the last standalone in-range capital,
    else the option text found last in the response (a longer option wins a tie), else "" (the official failure
    value). integer/float: the last number after the last "answer" anchor, else the last number; `,` `$` `%` and
    units dropped, Unicode minus read as "-". list: the last `[...]`, re-serialised with ", ". Free-form text: the
    response.
    """
    text = response.strip()
    if question_type == "multi_choice" and choices:
        span = f"A-{chr(ord('A') + len(choices) - 1)}"
        for pattern in (
            rf"\(([{span}])\)",
            rf"(?i:answer)\s*(?:(?i:is)\s*:?|:)\s*\(?([{span}])(?![A-Za-z0-9])",
            rf"(?<![A-Za-z0-9])([{span}])(?![A-Za-z0-9])",
        ):
            found = re.findall(pattern, text)
            if found:
                return found[-1]
        lowered = text.lower()
        hits = [(lowered.rfind(str(c).lower()), len(str(c)), str(c)) for c in choices if str(c)]
        hits = [hit for hit in hits if hit[0] >= 0]
        return max(hits)[2] if hits else ""
    if answer_type in ("integer", "float"):
        text = text.replace("\u2212", "-")
        anchor = text.lower().rfind("answer")
        numbers = _FLOAT_TOKEN.findall(text[anchor:]) if anchor >= 0 else []
        numbers = numbers or _FLOAT_TOKEN.findall(text)
        return numbers[-1].replace(",", "") if numbers else ""
    if answer_type == "list":
        lists = re.findall(r"\[([^\[\]]*)\]", text)
        if not lists:
            return ""
        return "[" + ", ".join(part.strip() for part in lists[-1].split(",") if part.strip()) + "]"
    return text


# ------------------------------------------------------------------------------------------- math-verify, letters


@functools.cache
def _no_signal_kwargs(func: Callable[..., Any], name: str) -> dict[str, Any]:
    """math-verify times out with signal.alarm (main thread only); disable it where the installed version allows."""
    return {name: None} if name in inspect.signature(func).parameters else {}  # read-only: never mutate


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (braces balanced; a box cut off by the token limit is skipped),
    None when there is none."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, begin = 0, start + len("\\boxed{")
        for index in range(begin, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                if depth == 0:
                    return text[begin:index].strip()
                depth -= 1
        start = text.rfind("\\boxed{", 0, start)
    return None


_ANSWER_IS = re.compile(r"answer is[:\s]*", re.IGNORECASE)


def final_answer(response: str) -> str:
    """The final answer of a chain-of-thought response: the last `\\boxed{}`, else the text after the last
    "answer is" (first line), else the whole response. Used by rewards, difficulty and the rule-based MC scorers."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    matches = list(_ANSWER_IS.finditer(response))
    if matches:
        return response[matches[-1].end() :].strip().split("\n")[0].strip().rstrip(".")
    return response.strip()


def boxed_format(response: str, solution: str) -> bool:
    """Format reward: the response states a non-empty final answer in a `\\boxed{}` (the solution is not used)."""
    return bool(last_boxed(response))


def math_match(response: str, solution: str) -> bool:
    """math-verify equivalence, gold first (verify is asymmetric); any parse/verify error counts as wrong."""
    from math_verify import parse, verify  # heavy (sympy): imported on first use

    try:
        gold = parse(solution, **_no_signal_kwargs(parse, "parsing_timeout"))
        pred = parse(response, **_no_signal_kwargs(parse, "parsing_timeout"))
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, **_no_signal_kwargs(verify, "timeout_seconds")))
    except Exception:  # a reward must not crash a training step on odd text
        return False


_LETTERS = [chr(ord("A") + i) for i in range(26)]
_GOLD_LETTER = re.compile(r"\s*\(?([A-Za-z])\)?(?![A-Za-z0-9])")


def choice_match(response: str, solution: str) -> bool:
    """Multiple choice by letter: MMMU's parser over A-Z (bracket, then space pass; no content pass, no random
    fallback) on the stripped response, compared with the gold's leading letter ("B", "(B)", "B." or "B. 5")."""
    gold = _GOLD_LETTER.match(solution)
    parsed = mmmu_parse_multi_choice(response.strip(), _LETTERS, {})
    return gold is not None and parsed == gold.group(1).upper()


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "exact": exact_match,
    "iou": box_match,
    "math": math_match,
    "choice": choice_match,
    "boxed_format": boxed_format,
}


def get_scorer(name: str) -> Callable[[str, str], bool]:
    """The (response, solution) -> bool scorer registered under `name`."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid names: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]
