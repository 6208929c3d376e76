"""MathVision / We-Math / VLMEvalKit `can_infer` scorers against the official behaviour.

The worked cases come from tests/data/grounding_math_examples.json (benchmarks "MathVision", "WeMath" and
"generic-MCQ(VLMEvalKit)"). The other cases were worked out by hand from the official code, step by step.

Run: `python -m pytest -q tests/test_math_scoring.py -p no:cacheprovider`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamodules.math_scoring import (
    mathvision_correct,
    mathvision_extract,
    mc_infer,
    wemath_extract,
    wemath_four_dim,
    wemath_step_accuracy,
)

EXAMPLES = json.loads((Path(__file__).parent / "data" / "grounding_math_examples.json").read_text(encoding="utf-8"))


def _examples(benchmark: str) -> list[Any]:
    """The vendored worked cases of one benchmark, as pytest params named by their index in the file."""
    return [
        pytest.param(case, id=f"{benchmark}-{i}") for i, case in enumerate(EXAMPLES) if case["benchmark"] == benchmark
    ]


LETTERS = ["A", "B", "C", "D", "E"]
ANGLES = {"A": "40°", "B": "60°", "C": "120°", "D": "140°"}


# --------------------------------------------------------------------------------------------------- MathVision


@pytest.mark.parametrize("case", _examples("MathVision"))
def test_mathvision_worked_cases(case: dict) -> None:
    inputs, expected = case["inputs"], case["expected"]
    assert mathvision_extract(inputs["response"]) == expected["extracted"]
    assert mathvision_correct(inputs["response"], inputs["answer"], inputs["options"]) is expected["correct"]


@pytest.mark.parametrize(
    ("response", "extracted"),
    [
        # letter shortcuts (the first letter in A..E order wins; later letters test the shortened text)
        ("B\nBecause the angle is larger", "b"),
        ("(C)\nblah", "c"),
        ("(D) D\nfoo", "d"),
        ("so the result is (A).", "a"),
        ("A\nso the answer is C.", "a"),
        # the text after the last "is " is a number
        ("The answer is 42.", "42"),
        ("the answer is 5. then it is 6", "6"),
        # flags: first line up to ". ", capitalised variants, a comma keeps the rest of the sentence
        ("The final answer is $3$. Because of X.", "3"),
        ("The answer is: 2\n\nExplanation", "2"),
        ("The correct answer is (B). Since the angle is larger", "b"),
        ("The correct answer is (B), since the angle is larger", "b,sincetheangleislarger"),
        ("Therefore, the answer should be 12 units.", "12"),
        # boxes: last box, "=" and "\approx", an unbalanced "}" cuts, empty box
        ("\\boxed{x = 3}", "3"),
        ("\\boxed{\\pi r^2 \\approx 3.14}", "3.14"),
        ("\\boxed{3} and {x}", "3"),
        ("\\boxed{}", "\\boxed"),
        ("\\boxed{ }", ""),
        ("\\boxed{(B)}", "b"),
        ("\\boxed{\\text{(C)}}", "c"),
        # _strip_string: fracs, sqrt, a/b, 0.5, leading "."; \frac12 is only fixed when "sqrt" is present
        ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{.5}", "\\frac{1}{2}"),
        ("\\boxed{1/2}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt3}", "\\sqrt{3}"),
        ("\\boxed{2\\sqrt3-\\frac12}", "2\\sqrt{3}-\\frac{1}{2}"),
        ("\\boxed{\\frac12}", "\\frac12"),
        ("\\boxed{\\frac1\\sqrt3}", "\\frac{1}{\\}sqrt{3}"),
        ("\\boxed{\\frac{e}{2}}", "\\frace{2}"),  # the "{e}" -> "e" letter mapping also hits fractions
        # degrees and units: ^\circ, km, m^3 and "units" go; "cm" and the unicode degree sign stay
        ("\\boxed{60^\\circ}", "60"),
        ("\\boxed{60^{\\circ}}", "60"),
        ("\\boxed{5 \\text{ km}}", "5"),
        ("\\boxed{12 \\text{ units}}", "12"),
        ("\\boxed{10 m^3}", "10"),
        ("\\boxed{5\\text{ cm}}", "5{cm}"),
        ("\\boxed{60°}", "60°"),
        # \left / \right, infinity
        ("\\boxed{\\left(1, 2\\right)}", "(1,2)"),
        ("\\boxed{+\\infty}", "\\infty"),
        ("\\boxed{∞}", "\\infty"),
    ],
)
def test_mathvision_extract(response: str, extracted: str) -> None:
    assert mathvision_extract(response) == extracted


@pytest.mark.parametrize(
    ("response", "answer", "options", "correct"),
    [
        ("\\boxed{\\frac{1}{2}}", "B", ["1", "\\frac{1}{2}", "2", "3", "4"], True),  # the gold option's text
        ("\\boxed{0.5}", "B", ["1", "\\frac{1}{2}", "2", "3", "4"], True),
        ("\\boxed{2}", "B", ["1", "2", "3", "4", "5"], True),
        ("\\boxed{3}", "B", ["1", "2", "3", "4", "5"], False),
        ("\\boxed{B}", "C", LETTERS, False),
        ("\\boxed{e}", "E", LETTERS, True),  # lower-cased on both sides
        ("\\boxed{ }", "A", LETTERS, False),  # empty extraction never matches
        ("\\boxed{1/2}", "0.5", [], True),  # numbers equal to 2 decimals
        ("\\boxed{\\frac{1}{3}}", "0.33", [], True),
        ("\\boxed{\\sqrt{2}}", "1.41", [], True),
        ("\\boxed{0.34}", "\\frac{1}{3}", [], False),
        ("\\boxed{3.001}", "3", [], True),
        ("\\boxed{3.01}", "3", [], False),
        ("\\boxed{60^\\circ}", "60", [], True),
        ("The answer is 7.5.", "7.5", [], True),
        ("\\boxed{(0.5, \\frac{4}{2})}", "(\\frac{1}{2},2)", [], True),  # eval_tuple rounds each element
        ("\\boxed{(1.0, 2)}", "(1,2)", [], True),
        ("\\boxed{(1, 2.5)}", "(1,2)", [], False),
        ("\\boxed{[1,\\infty)}", "[1,\\infty)", [], True),
        ("\\boxed{x}", "y", [], False),  # symbols are not numbers
        ("\\boxed{12}", "12", ["A", "B"], True),  # a non-letter answer: no option lookup
    ],
)
def test_mathvision_correct(response: str, answer: str, options: list[str], correct: bool) -> None:
    assert mathvision_correct(response, answer, options) is correct


# ------------------------------------------------------------------------------------------------------ We-Math


@pytest.mark.parametrize("case", _examples("WeMath"))
def test_wemath_worked_cases(case: dict) -> None:
    inputs, expected = case["inputs"], case["expected"]
    if "rows" in inputs:
        result = wemath_four_dim(inputs["rows"], total=inputs["total_count"])
        assert result["counts"] == expected["counts"]
        assert result["score_strict"] == pytest.approx(expected["score_strict"])
        assert result["score_loose"] == pytest.approx(expected["score_loose"])
    else:
        extracted = wemath_extract(inputs["response"])
        assert extracted == expected["processed_answer"]
        assert (extracted == inputs["answer"]) is expected["joker"]


@pytest.mark.parametrize(
    ("response", "extracted"),
    [
        ("<Thought process>: <<x>> <Answer>: <<C>>.", "C"),
        ("<Answer>: E. No correct answer", "E"),
        ("Answer: F", "F"),  # A-H are accepted
        ("Answer: I", None),
        ("Answer: b", None),  # case-sensitive
        ("Answer: Because the angle is larger", "B"),  # any word starting with A-H
        ("Answer: **B**", None),
        ("answer: B", None),  # no "Answer": the whole text, first character "a"
        ("Answer: A ... Answer: D", "D"),  # the last "Answer"
        ("Answer:.<>", None),
    ],
)
def test_wemath_extract(response: str, extracted: str | None) -> None:
    assert wemath_extract(response) == extracted


def _rows(problems: dict[str, tuple[list[bool], bool]]) -> list[dict]:
    """Official-style rows (`Nsteps_i` sub-questions, then `Nsteps_multi`) for {ID: (sub jokers, multi joker)}."""
    rows = []
    for problem_id, (subs, multi) in problems.items():
        steps = len(subs)
        rows += [{"ID": problem_id, "key": f"{steps}steps_{i}", "joker": j} for i, j in enumerate(subs, 1)]
        rows.append({"ID": problem_id, "key": f"{steps}steps_multi", "joker": multi})
    return rows


T, F = True, False
MIXED = {
    "p1": ([T, T], T),  # CM strict + loose
    "p2": ([T, F], T),  # RM strict, CM loose
    "p3": ([F, F], T),  # RM strict + loose
    "p4": ([T, T], F),  # IG
    "p5": ([T, F], F),  # IK
    "p6": ([F, F], F),  # IK
    "q1": ([T, T, T], T),  # CM strict + loose
    "q2": ([F, T, F], T),  # RM strict, CM loose
    "q3": ([F, F, F], T),  # RM strict + loose
    "q4": ([T, T, T], F),  # IG
    "q5": ([F, F, T], F),  # IK
}


def test_wemath_four_dim_strict_vs_loose() -> None:
    result = wemath_four_dim(_rows(MIXED), total=11)
    counts = result["counts"]
    assert counts == {"IK": 3, "IG": 2, "CM_strict": 2, "CM_loose": 4, "RM_strict": 4, "RM_loose": 2}
    assert result["score_strict"] == pytest.approx((11 - 0.5 * 2 - 4 - 3) / 11)
    assert result["score_loose"] == pytest.approx((11 - 0.5 * 2 - 2 - 3) / 11)
    assert result["rates"]["RM_strict"] == pytest.approx(4 / 6)
    assert result["rates"]["RM_loose"] == pytest.approx(2 / 6)
    assert result["rates"]["IK"] == pytest.approx(3 / 11)
    for kind in ("strict", "loose"):  # with complete rows each problem falls in exactly one class
        assert counts["IK"] + counts["IG"] + counts[f"CM_{kind}"] + counts[f"RM_{kind}"] == len(MIXED)


def test_wemath_four_dim_default_total_is_525() -> None:
    result = wemath_four_dim(_rows(MIXED))
    assert result["total"] == 525
    assert result["score_strict"] == pytest.approx((525 - 1 - 4 - 3) / 525)
    assert result["score_loose"] == pytest.approx((525 - 1 - 2 - 3) / 525)


def test_wemath_four_dim_merge_quirks() -> None:
    rows = [
        # no multi row: counted nowhere
        {"ID": "a", "key": "2steps_1", "joker": True},
        {"ID": "a", "key": "2steps_2", "joker": True},
        # no `_1` row: dropped even with a right multi row
        {"ID": "b", "key": "2steps_2", "joker": False},
        {"ID": "b", "key": "2steps_multi", "joker": True},
        # missing `_2` row: neither right nor wrong -> RM strict only (not "all wrong")
        {"ID": "c", "key": "2steps_1", "joker": False},
        {"ID": "c", "key": "2steps_multi", "joker": True},
        # two multi rows: the left join yields both combinations
        {"ID": "d", "key": "3steps_1", "joker": True},
        {"ID": "d", "key": "3steps_2", "joker": True},
        {"ID": "d", "key": "3steps_3", "joker": True},
        {"ID": "d", "key": "3steps_multi", "joker": True},
        {"ID": "d", "key": "3steps_multi", "joker": False},
    ]
    result = wemath_four_dim(rows, total=4)
    assert result["counts"] == {"IK": 0, "IG": 1, "CM_strict": 1, "CM_loose": 1, "RM_strict": 1, "RM_loose": 0}
    assert result["rates"]["RM_loose"] == 0.0


def test_wemath_four_dim_empty() -> None:
    result = wemath_four_dim([])
    assert result["score_strict"] == result["score_loose"] == 1.0
    assert result["rates"]["RM_strict"] is None and result["rates"]["RM_loose"] is None


def test_wemath_step_accuracy_by_hand() -> None:
    result = wemath_step_accuracy(_rows(MIXED))
    # S1: sub-question cells, 6 of 12 right in p1..p6 and 8 of 15 in q1..q5
    assert result["s1"] == pytest.approx(14 / 27)
    assert result["s2"] == pytest.approx(3 / 6)  # multi rows of p1..p6: T T T F F F
    assert result["s3"] == pytest.approx(3 / 5)  # multi rows of q1..q5: T T T F F
    assert result["counts"] == {"s1": 27, "s2": 6, "s3": 5}


def test_wemath_step_accuracy_follows_the_official_join() -> None:
    rows = [
        # no multi row: its sub-questions still count for S1, nothing for S2
        {"ID": "a", "key": "2steps_1", "joker": True},
        {"ID": "a", "key": "2steps_2", "joker": True},
        # no `_1` row: ignored, even for S2
        {"ID": "b", "key": "2steps_2", "joker": False},
        {"ID": "b", "key": "2steps_multi", "joker": False},
        # missing `_2` row: skipped (NaN), not wrong
        {"ID": "c", "key": "2steps_1", "joker": False},
        {"ID": "c", "key": "2steps_multi", "joker": True},
        # two multi rows: two joined rows, so the three sub-questions count twice
        {"ID": "d", "key": "3steps_1", "joker": True},
        {"ID": "d", "key": "3steps_2", "joker": True},
        {"ID": "d", "key": "3steps_3", "joker": True},
        {"ID": "d", "key": "3steps_multi", "joker": True},
        {"ID": "d", "key": "3steps_multi", "joker": False},
    ]
    result = wemath_step_accuracy(rows)
    assert result["s1"] == pytest.approx(8 / 9)  # a: T T; c: F; d: T T T twice
    assert result["s2"] == 1.0 and result["s3"] == 0.5
    assert result["counts"] == {"s1": 9, "s2": 1, "s3": 2}


def test_wemath_step_accuracy_empty() -> None:
    assert wemath_step_accuracy([]) == {"s1": None, "s2": None, "s3": None, "counts": {"s1": 0, "s2": 0, "s3": 0}}


# ------------------------------------------------------------------------------------- VLMEvalKit can_infer


@pytest.mark.parametrize("case", _examples("generic-MCQ(VLMEvalKit)"))
def test_can_infer_worked_cases(case: dict) -> None:
    assert mc_infer(case["inputs"]["answer"], case["inputs"]["choices"]) == case["expected"]


@pytest.mark.parametrize(
    ("answer", "choices", "expected"),
    [
        ("Cannot determine the answer, but A", ANGLES, "Z"),  # refusal first
        ("Sorry, I can't help with images of people yet.", ANGLES, "Z"),
        ("Failed to obtain answer via API", ANGLES, False),  # option step gives up; too long for text
        ("Z", ANGLES, "Z"),
        ("None of them, Z", ANGLES, "Z"),
        ("x B x x x", ANGLES, "B"),  # index 1 > 5 - 5
        ("B x x x x", ANGLES, False),  # index 0 is not > 0: only the last four tokens count
        ("x x x x x x x B", ANGLES, "B"),
        ("It is a C", ANGLES, "C"),  # lower-case "a" is no choice
        ("The answer is E", ANGLES, False),  # E is no choice here
        ("The answer is E", {**ANGLES, "E": "160°"}, "E"),
        ("The answer is **B** because the angle is clearly the largest of all four shown", ANGLES, "B"),  # rescue
        ("the answer is definitely wrong here, sorry", ANGLES, "D"),  # the rescue regex has no word boundary
        ("60°", ANGLES, "B"),  # text match
        ("The angle is 60°", ANGLES, "B"),
        ("BLUE", {"A": "Red", "B": "Blue"}, "B"),  # text match is case-insensitive
        ("it is blue, surely", {"A": "Red", "B": "Blue"}, False),  # longer than 2 x 7 characters
        ("y", {"A": "", "B": "x"}, "A"),  # an empty choice text is inside every answer
    ],
)
def test_can_infer(answer: str, choices: dict[str, str], expected: str | bool) -> None:
    assert mc_infer(answer, choices) == expected


def test_can_infer_leaves_choices_alone_and_checks_keys() -> None:
    choices = {"A": "Red", "B": "Blue"}
    assert mc_infer("blue", choices) == "B"
    assert choices == {"A": "Red", "B": "Blue"}
    with pytest.raises(ValueError):
        mc_infer("q", {"a": "x"})
