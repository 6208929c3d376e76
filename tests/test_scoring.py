"""Scorers vs. the official behaviour: worked cases (vendored in tests/data/scoring_examples.json, each with the
official code's result and a rationale) plus hand-written edge cases.

Run: `python -m pytest tests/test_scoring.py -q`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamodules import scoring as S

EXAMPLES = Path(__file__).parent / "data" / "scoring_examples.json"
CASES = json.loads(EXAMPLES.read_text(encoding="utf-8"))
CELL = {"A": "mitochondria", "B": "nucleus", "C": "ribosome", "D": "golgi apparatus"}
ABCD = ["A", "B", "C", "D"]
NINE = list("ABCDEFGHI")
NINE_ANS = dict(zip(NINE, "xyzwvutsr"))


def check_case(case: dict) -> None:
    """Assert one case of scoring_examples.json (random fallbacks: only that the fallback branch was taken)."""
    kind, inp, exp = case["kind"], case["inputs"], case["expected"]
    if kind == "multiple_choice_parse":
        parsed = S.mmmu_parse_multi_choice(inp["response"], inp["all_choices"], inp["index2ans"])
        assert parsed == exp["parsed"]
        assert (parsed is None) == exp["random_fallback"]
        if parsed is not None:
            assert S.mmmu_eval_multi_choice(inp["gold"], parsed) == exp["correct"]
    elif kind == "open_parse":
        parsed = S.mmmu_parse_open(inp["response"])
        assert parsed == exp["parsed_candidates"]
        assert S.mmmu_eval_open(inp["gold"], parsed) == exp["correct"]
    elif kind == "normalize_and_score":
        args = (inp["extraction"], inp["choices"], inp["question_type"], inp["answer_type"], inp["precision"])
        normalized = S.mathvista_normalize(*args)
        assert normalized == exp["normalized"]
        assert S.mathvista_is_correct(normalized, inp["gold"]) == exp["correct"]
    elif kind == "rule_extraction":
        args = (inp["response"], inp["question_type"], inp["answer_type"], inp["choices"], inp["quick_extract"])
        extraction = S.mathvista_extract(*args)
        assert extraction == exp["extraction"]
        assert (extraction is None) == exp["needs_llm"]
    elif kind == "exact_match":
        assert S.exact_match(inp["response"], inp["solution"]) == exp["correct"]
    elif kind == "parse_verify":
        if "StringExtractionConfig" in inp["gold_config"]:  # letters are our choice_match's job
            assert S.choice_match(inp["prediction"], inp["gold"]) == exp["correct"]
        else:
            assert S.math_match(inp["prediction"], inp["gold"]) == exp["correct"]
    else:
        raise AssertionError(f"unknown kind {kind}")


@pytest.mark.parametrize("index", range(len(CASES)))
def test_worked_examples(index: int) -> None:
    check_case(CASES[index])


def test_worked_examples_count() -> None:
    assert len(CASES) == 62


# Core cases copied from scoring_examples.json (response, choices, index2ans, expected parse; None = random fallback).
MC_CORE = [
    ("B", ABCD, CELL, "B"),
    ("The answer is (D).", ABCD, CELL, "D"),  # trailing '.' stripped, bracket pass
    ("B. ", ABCD, CELL, None),  # no whitespace strip first: the '.' survives, ' B ' never appears
    ("a", ABCD, CELL, None),  # case-sensitive
    ("A B", ABCD, CELL, "B"),  # last ' X ' (rfind) wins
    ("(B) is wrong, the answer is A", ABCD, CELL, "B"),  # bracket pass has priority
    ("A nucleus stores the DNA of the cell", ABCD, CELL, "A"),  # the article is option A
    ("The correct option is nucleus", ABCD, CELL, None),  # exactly 5 tokens: no content pass
    ("A,.", ABCD, CELL, None),  # ',' stripped before '.', so 'A,' survives
    ("Answer: B", ABCD, CELL, "B"),
    ("C", NINE, NINE_ANS, "C"),
    ("C I think", NINE, NINE_ANS, "I"),  # with 9 options the pronoun is option I
    ("The structure shown is the cell wall of a plant", ABCD, dict(zip(ABCD, ["cell", "cell wall", "m", "v"])), "A"),
]
# Extra MC edge cases (official `eval_utils.py` behaviour).
MC_EDGE = [
    ("B.", ABCD, CELL, "B"),  # '.' stripped, nothing else in the way
    ("(C)", ABCD, CELL, "C"),
    ("\nB", ABCD, CELL, None),  # the newline stays, so ' B ' never appears (callers strip first)
    ("**C**", ABCD, CELL, None),  # markdown bold is not understood
    ("E", ABCD, CELL, None),  # out of range for 4 options
    ("The answer is B because A is wrong", ABCD, CELL, "A"),  # last letter wins
    ("I think the nucleus is the organelle here", ABCD, CELL, "B"),  # > 5 tokens: content pass; I is not in range
    ("mitochondria or maybe the nucleus, not sure", ABCD, CELL, "B"),  # content pass: the last option text wins
    ("(A) (B) then (A)", ABCD, CELL, "A"),  # rfind of '(A)' is later than '(B)'
]


@pytest.mark.parametrize("response,choices,index2ans,expected", MC_CORE + MC_EDGE)
def test_mmmu_parse_multi_choice(response: str, choices: list, index2ans: dict, expected: str | None) -> None:
    assert S.mmmu_parse_multi_choice(response, choices, index2ans) == expected


def test_mmmu_eval_multi_choice() -> None:
    assert S.mmmu_eval_multi_choice("B", "B")
    assert not S.mmmu_eval_multi_choice("B", "C")
    assert S.mmmu_eval_multi_choice(["A", "C"], "C")  # a list gold matches any element


# (response, gold, expected candidates or None to skip, correct) — inline copies and open-answer edge cases.
OPEN_CASES = [
    ("36 watts", "30", [36.0, "36 watts"], False),
    ("1.06 m", "1.06", [1.06, "1.06 m"], True),
    ("0.2857", "0.286", [0.29], True),  # both rounded to 2 decimals
    ("24/7", ["24/7", "3.429"], [24.0, 7.0, "24/7"], True),
    ("A", "A", [" a", "a "], True),  # 1-char strings padded on both sides
    ("c) tumor", "C", ["c) tumor"], False),
    ("It is a transformation.", "Transformation", ["a transformation"], True),
    ("−120", "-120", [120.0, "−120"], False),  # Unicode minus not parsed
    ("The value is 60\nSo the total is 120", "60", [120.0, 60.0], True),  # any line may match
    ("8.2e3", "8200", [3.0, 8.0, 8200.0], True),  # scientific + spurious plain numbers
    ("0.015625", "1/64", [0.02], False),  # a non-float gold is only substring-matched
    ("", "30", [""], False),
    ("The answer is 30.", "30", None, True),
    ("7,243,000", "7243000", [0.0, 7243000.0], True),  # the whole text is a number; plain regex also yields '000'
    ("10%", "0.10", None, False),
    ("2 million", "2000000", [2.0, "2 million"], False),
    ("Embryonic stage", "embryonic", None, True),  # substring
    ("x = 8", "8", [8.0], True),  # '=' indicator on the last piece
    ("this one", "one", ["one"], True),  # 'is ' fires inside 'this '
    ("the answer is : ", "x", ["the answer is :"], False),  # ':' tail is trivial -> whole response
    ("1_000", "1000", [0.0, 1000.0], True),  # float() accepts underscores; the plain regex finds only '000'
]


@pytest.mark.parametrize("response,gold,candidates,correct", OPEN_CASES)
def test_mmmu_open(response: str, gold: str | list, candidates: list | None, correct: bool) -> None:
    parsed = S.mmmu_parse_open(response)
    if candidates is not None:
        assert parsed == candidates
    assert S.mmmu_eval_open(gold, parsed) is correct


MV = ["3/11", "8/11", "6/11", "3/5"]
# (extraction, choices, question_type, answer_type, precision, gold, normalized) — inline copies and normalisation edge cases.
NORMALIZE_CASES = [
    ("A", MV, "multi_choice", "text", None, "3/11", "3/11"),
    ("(a)", MV, "multi_choice", "text", None, "3/11", "3/11"),  # '(x)' upper-cased
    ("", MV, "multi_choice", "text", None, "3/11", "3/5"),  # empty -> shortest choice by edit distance
    ("b", MV, "multi_choice", "text", None, "8/11", "3/5"),  # a bare lower-case letter is not B: edit distance
    ("The answer is (B) 8/11", MV, "multi_choice", "text", None, "8/11", "8/11"),  # first '(x)' taken
    ("(Z)", MV, "multi_choice", "text", None, "3/11", "3/5"),  # out-of-range letter -> edit distance
    ("x/11", MV, "multi_choice", "text", None, "3/11", "3/11"),  # distance 1 to 3/11, 8/11 and 6/11: first wins
    ("D", ["9", "12", "18", "18"], "multi_choice", "text", None, "18", "18"),  # pid 781 duplicate options
    ("14.0", None, "free_form", "integer", None, "14", "14"),
    ("14.7", None, "free_form", "integer", None, "14", "14"),  # truncation
    ("-3.9", None, "free_form", "integer", None, "-3", "-3"),
    ("1,000", None, "free_form", "integer", None, "1000", None),
    ("5 years", None, "free_form", "integer", None, "5", None),
    ("$5", None, "free_form", "integer", None, "5", None),
    (None, None, "free_form", "integer", None, "5", None),
    ("1.2", None, "free_form", "float", 1.0, "1.2", "1.2"),  # HF float64 precision works through int()
    ("1.25", None, "free_form", "float", 1, "1.2", "1.2"),  # binary value of 1.25 rounds down
    ("1.35", None, "free_form", "float", 1, "1.3", "1.4"),
    ("47.60", None, "free_form", "float", 1, "47.6", "47.6"),
    ("-0.0", None, "free_form", "float", 1, "0.0", "-0.0"),  # wrong vs 0.0
    ("−4.3", None, "free_form", "float", 1, "-4.3", None),  # Unicode minus
    ("2.5454", None, "free_form", "float", 2.0, "2.54", "2.55"),  # pid 479: gold kept at 2.54
    ("1.2", None, "free_form", "float", None, "1.2", None),  # missing precision -> int(None) fails
    ("[2014, 2016]", None, "free_form", "list", None, "[2014, 2016]", "[2014, 2016]"),
    ([2014, 2016], None, "free_form", "list", None, "[2014, 2016]", "[2014, 2016]"),  # str(list)
    ("[2014,2016]", None, "free_form", "list", None, "[2014, 2016]", "[2014,2016]"),  # spacing matters
]


@pytest.mark.parametrize("extraction,choices,qtype,atype,precision,gold,normalized", NORMALIZE_CASES)
def test_mathvista_normalize(
    extraction: Any,
    choices: list[str] | None,
    qtype: str,
    atype: str,
    precision: float | None,
    gold: str,
    normalized: str | None,
) -> None:
    result = S.mathvista_normalize(extraction, choices, qtype, atype, precision)
    assert result == normalized
    assert S.mathvista_is_correct(result, gold) == (normalized == gold)


def test_mathvista_safe_equal_has_no_strip() -> None:
    assert not S.mathvista_is_correct(" 14", "14")
    assert not S.mathvista_is_correct(None, "None")


# (response, question_type, answer_type, choices, quick_extract, expected; None = would call the LLM), MathVista quick extraction.
EXTRACT_CASES = [
    ("14", "free_form", "integer", None, False, "14"),
    (" 14 ", "free_form", "integer", None, False, "14"),  # int() accepts surrounding whitespace
    ("14.", "free_form", "integer", None, False, None),
    ("14.0", "free_form", "integer", None, False, None),  # floats only tried for float questions
    ("1.20", "free_form", "float", None, False, "1.2"),
    ("8/11", "multi_choice", "text", MV, False, "8/11"),
    ("B", "multi_choice", "text", MV, False, None),  # a bare letter is not a choice text
    ("", "free_form", "integer", None, False, ""),
    ("The answer is 8.", "free_form", "integer", None, True, None),  # no quotes
    ('The answer is "8".', "free_form", "integer", None, True, "8"),
    ('The answer is "8".', "free_form", "integer", None, False, None),  # rule 5 only with quick_extract
]


@pytest.mark.parametrize("response,qtype,atype,choices,quick,expected", EXTRACT_CASES)
def test_mathvista_extract(
    response: str, qtype: str, atype: str, choices: list[str] | None, quick: bool, expected: str | None
) -> None:
    assert S.mathvista_extract(response, qtype, atype, choices, quick_extract=quick) == expected


# The offline stand-in for the GPT extractor (an approximation; these pin its documented behaviour).
FALLBACK_CASES = [
    ("The answer is (B).", "multi_choice", "text", MV, "B"),
    ("Answer: C", "multi_choice", "text", MV, "C"),
    ("So the correct choice is D", "multi_choice", "text", MV, "D"),
    ("It must be 6/11 because ...", "multi_choice", "text", MV, "6/11"),
    ("Unclear", "multi_choice", "text", ["yes", "no"], ""),
    ("The answer is 14.", "free_form", "integer", None, "14"),
    ("First 3 + 4, so 1,234 apples", "free_form", "integer", None, "1234"),
    ("Final answer: −4.3 cm", "free_form", "float", None, "-4.3"),
    ("It is $5.", "free_form", "integer", None, "5"),
    ("Answer: [2014,2016].", "free_form", "list", None, "[2014, 2016]"),
    ("no number", "free_form", "float", None, ""),
]


@pytest.mark.parametrize("response,qtype,atype,choices,expected", FALLBACK_CASES)
def test_mathvista_fallback_extract(
    response: str, qtype: str, atype: str, choices: list[str] | None, expected: str
) -> None:
    assert S.mathvista_fallback_extract(response, qtype, atype, choices) == expected


EXACT_CASES = [
    ("Goose.", "goose", True),
    ("...goose...", "goose", True),
    ("goose .", "goose", False),  # the space before the dot survives
    ("goose!", "goose", False),
    ("geese", "goose", False),
    ("Shih Tzu", "Shih-Tzu", False),
    ("jack-o’-lantern", "jack-o'-lantern", False),  # typographic apostrophe
    ("<answer>goose</answer>", "goose", False),
    ("  GOOSE \n", "goose", True),  # whitespace stripped first, then case folded
    ('"goose"', "goose", False),  # quotes are not stripped
    ("a goose", "goose", False),  # articles are not dropped
]


@pytest.mark.parametrize("response,solution,correct", EXACT_CASES)
def test_exact_match(response: str, solution: str, correct: bool) -> None:
    assert S.exact_match(response, solution) is correct


def test_iou_official_convention() -> None:
    # [0,0,10,10] vs [0,0,10,20]: inter x: max(0,0)=0 .. min(10-1, 10-1)=9 -> 9-0+1 = 10; y: 0 .. min(9, 19)=9 -> 10
    # inter = 100; union = 10*10 + 10*20 - 100 = 200 (plain areas) -> 0.5
    assert S.iou([0, 0, 10, 10], [0, 0, 10, 20]) == pytest.approx(0.5)
    # Overlap only 1 pixel wide: inter_x1 = 9, inter_x2 = min(9, 19) = 9, not 9 < 9 -> inter = 0 (plain IoU: 0.05)
    assert S.iou([0, 0, 10, 10], [9, 0, 20, 10]) == 0.0
    # [0,0,4,4] vs [2,2,6,6]: inter (3-2+1)*(3-2+1) = 4; union 16 + 16 - 4 = 28 -> 1/7
    assert S.iou([0, 0, 4, 4], [2, 2, 6, 6]) == pytest.approx(1 / 7)
    assert S.iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # degenerate: no division by zero


def test_parse_box_and_box_match() -> None:
    assert S.parse_box("box: [1.5, 2, -3, .5] and [9, 9, 9, 9]") == [1.5, 2.0, -3.0, 0.5]  # the first list
    assert S.parse_box("[ 1 , 2 , 3 , 4 ]") == [1.0, 2.0, 3.0, 4.0]
    assert S.parse_box("[1, 2, 3]") is None
    assert S.box_match("The box is [0, 0, 10, 20].", "[0,0,10,10]")  # IoU exactly 0.5 passes (>=)
    assert not S.box_match("[0, 0, 10, 20]", "[0,0,10,10]", threshold=0.6)
    assert not S.box_match("no box", "[0,0,10,10]")
    assert S.box_match("[0, 0, 10, 10]", [0, 0, 10, 10])  # a list gold works too
    with pytest.raises(ValueError, match="no \\[x1"):
        S.box_match("[0, 0, 1, 1]", "none")


def test_math_match() -> None:
    assert S.math_match("3.428571", "$\\frac{24}{7}$")  # rational vs 6-decimal float
    assert not S.math_match("$\\boxed{2.5454}$", "$2.54$")  # no MathVista-style rounding
    assert S.math_match("The answer is $\\boxed{1000}$", "1,000")
    assert not S.math_match("", "1")


def test_math_match_off_main_thread() -> None:
    # signal.alarm only works in the main thread: the timeouts must be disabled for rewards computed in threads.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(S.math_match, "$\\frac{1}{2}$", "0.5").result()


@pytest.mark.parametrize(
    "response,solution,correct",
    [
        ("B", "B", True),
        ("(C)", "C", True),
        ("The answer is B.", "B", True),
        ("B. ", "B", True),  # stripped before parsing, unlike the raw MMMU parser
        ("b", "B", False),  # case-sensitive like MMMU
        ("nothing here", "A", False),  # no random fallback
        ("The answer is (D)", "(D)", True),  # gold given with brackets
        ("D", "D. 12 cm", True),  # gold given with its option text: its leading letter counts
        ("B", "Because", False),  # not a letter gold
    ],
)
def test_choice_match(response: str, solution: str, correct: bool) -> None:
    assert S.choice_match(response, solution) is correct


def test_registry() -> None:
    assert set(S.SCORERS) == {"exact", "iou", "math", "choice", "boxed_format"}
    assert S.boxed_format("so \\boxed{4}", "") and not S.boxed_format("4", "4")
    assert S.get_scorer("exact")("Goose.", "goose")
    assert S.get_scorer("iou")("[0, 0, 10, 10]", "[0, 0, 10, 10]")
    with pytest.raises(ValueError, match="valid names: boxed_format, choice, exact, iou, math"):
        S.get_scorer("f1")


def test_levenshtein() -> None:
    assert S._levenshtein("kitten", "sitting") == 3
    assert S._levenshtein("", "3/5") == 3
    assert S._levenshtein("abc", "abc") == 0
