"""Official scoring rules of three math benchmarks and of VLMEvalKit's generic multiple-choice matcher.

These are our own re-implementations, written after reading the official code. They keep its quirks because the
published numbers were computed with them:
- MathVision (MATH-V): rule-based answer extraction and `is_equal`, from mathllm/MATH-V `evaluation/evaluate.py::
  evaluate` and `evaluation/utils.py` (`find_math_answer`, `_strip_string`, `_fix_fracs`, `_fix_sqrt`,
  `_fix_a_slash_b`, `eval_tuple`, `is_equal`, `is_number`);
- We-Math: the answer extractor and the four-dimensional metrics (IK, IG, CM, RM, strict and loose scores), from
  We-Math/We-Math `evaluation/four_dimensional_metrics.py`, and the step accuracies S1 / S2 / S3 from
  `evaluation/accuracy.py`;
- VLMEvalKit `vlmeval/utils/matching_util.py::can_infer` (`can_infer_option`, then `can_infer_text`), the version
  with the last-tokens window and the "answer is **X**" rescue.

Deviations from the official behaviour:
- MATH-V turns numbers into values with `eval(str(latex2sympy(x)))` from the `latex2sympy2` package, run in a
  namespace holding `from math import *`. We never `eval` model text. We parse with `latex2sympy2_extended` (a fork of
  latex2sympy2 installed with math-verify), with normalisation off and mixed fractions off. Then we evaluate
  numerically with sympy, reading the free symbols `e`, `pi` and `tau` as the `math` constants. As the official eval
  raises NameError on them, expressions are not numbers if they hold sympy's `E` (printed "E") or call a function
  absent from Python's `math` module (Abs, ceiling, Max, ...). For `eval_tuple`'s formatting, a value is an int when
  Python would compute it as one (integers combined by +, -, *, powers, factorials). The fork folds numeric fractions,
  though, so "\\frac{4}{2}" gives the int 2 where the official code gets 2.0. Rounding at a .xx5 boundary may
  differ from Python float arithmetic. Text over 200 characters, non-finite values and factorials of arguments over
  10,000 are not evaluated: the official code would parse them slowly, hang or run out of memory. Without
  latex2sympy2_extended, the numeric step falls back to `int()`, then `float()`.
- `mathvision_correct` compares with the option text only when `answer` is a letter that indexes `options`. The
  official code would raise an error there, or index from the end.
- `wemath_four_dim` takes the denominator `total` (525 by default, as hard-coded officially). It returns the scores and
  rates as fractions, not as "{:.2%}" strings. An RM rate whose denominator (CM + RM) is 0 is None, where the
  official code divides by zero.
- `mc_infer` behaves as VLMEvalKit does with the environment variable VERBOSE unset (the usual case). It does not
  lower-case the caller's `choices` in place, as the official `can_infer_text` does.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from itertools import product
from typing import Any

# --------------------------------------------------------------------------------------------------- MathVision

_MV_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")
_MV_BOX_RE = re.compile(r"oxed\{(.*)\}", re.DOTALL)  # greedy: from the first "oxed{" to the last "}"
_MV_MAX_NUMERIC_CHARS = 200
_MV_MAX_FACTORIAL = 10_000
_MV_CLEANUP = (  # `find_math_answer` clean-up, in the official order
    (" ", ""),
    ("\\,", ""),
    ("∞", "\\infty"),
    ("+\\infty", "\\infty"),
    ("\\\\", "\\"),
    ("\n", ""),
    ("\\text", ""),
    ("\\mbox", ""),
    ("bmatrix", "pmatrix"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("{m}^3", ""),
    ("m^3", ""),
    ("{units}", ""),
    ("units", ""),
    ("{km}", ""),
    ("km", ""),
)


def _mv_is_number(text: str) -> bool:
    """MATH-V `is_number`: whatever Python's `float()` accepts (so " 3 ", "1e3", "inf" and "1_0" count)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mv_fix_sqrt(text: str) -> str:
    """MATH-V `_fix_sqrt`: `\\sqrt3` -> `\\sqrt{3}`; only the one character after an unbraced `\\sqrt` is wrapped."""
    head, *tails = text.split("\\sqrt")
    parts = [head]
    for tail in tails:
        parts.append("\\sqrt{" + tail[0] + "}" + tail[1:] if tail and tail[0] != "{" else "\\sqrt" + tail)
    return "".join(parts)


def _mv_fix_fracs(text: str) -> str:
    """MATH-V `_fix_fracs`: `\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`; a `\\frac` followed by
    under 2 characters makes the whole input come back unchanged (the official `assert` + bare `except`)."""
    head, *tails = text.split("\\frac")
    parts = [head]
    for tail in tails:
        parts.append("\\frac")
        if tail.startswith("{"):
            parts.append(tail)
        elif len(tail) < 2:
            return text
        elif tail[1] == "{":
            parts.append("{" + tail[0] + "}" + tail[1:])
        else:
            parts.append("{" + tail[0] + "}{" + tail[1] + "}" + tail[2:])
    return "".join(parts)


def _mv_fix_slash(text: str) -> str:
    """MATH-V `_fix_a_slash_b`: `3/4` -> `\\frac{3}{4}`, only for one slash between two canonically written ints."""
    pieces = text.split("/")
    if len(pieces) != 2:
        return text
    try:
        num, den = int(pieces[0]), int(pieces[1])
    except ValueError:
        return text
    return f"\\frac{{{num}}}{{{den}}}" if text == f"{num}/{den}" else text


def _mv_strip_string(text: str) -> str:
    """MATH-V `_strip_string`, step by step in the official order.

    Quirk kept: `_fix_fracs` only runs when the text contains "sqrt", so a lone `\\frac12` stays as it is.
    """
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "").replace("$", "")
    text = text.split("\\text{ ")[0]  # `_remove_right_units`
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    for sep in ("=", "\\approx"):
        pieces = text.split(sep)
        if len(pieces) == 2:
            text = pieces[1]
    if "sqrt" in text:
        text = _mv_fix_sqrt(text)
    text = text.replace(" ", "")
    if "sqrt" in text:
        text = _mv_fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _mv_fix_slash(text)


def _mv_find_math_answer(text: str) -> str:
    """MATH-V `find_math_answer`: last box, value after "=" / "\\approx", LaTeX and unit clean-up, `_strip_string`."""
    text = text.lower().replace("{}", "")
    boxed = _MV_BOX_RE.findall(text)
    ans = boxed[-1] if boxed else text
    close, open_ = ans.find("}"), ans.find("{")
    if close != -1 and (open_ == -1 or close < open_):  # an unbalanced "}" ends the box
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1].split("\\approx")[-1]
    for old, new in _MV_CLEANUP:
        ans = ans.replace(old, new)
    return _mv_strip_string(ans)


def mathvision_extract(response: str) -> str:
    """MATH-V's rule-based answer extraction, lower-cased, quirks included.

    Why: MathVision accuracies are reported with this exact rule (mathllm/MATH-V `evaluation/evaluate.py::evaluate`
    plus `evaluation/utils.py::find_math_answer`). Without a flag or a box, the whole response is kept, so wordy
    answers score wrong.
    """
    text = response.strip()
    for letter in "ABCDE":  # a later letter is tested against the already shortened text
        if text.endswith((f" {letter}.", f" ({letter}).")) or text.startswith(
            (f"{letter}\n", f"({letter})\n", f"({letter}) {letter}\n")
        ):
            text = letter
    after_is = text.split("is ")[-1].rstrip(".")
    if _mv_is_number(after_is):
        text = after_is
    if "oxed{" not in text:
        for flag in _MV_FLAGS:
            for variant in (flag, flag.replace("the", "The")):
                had_flag = variant in text
                text = text.split(variant)[-1].strip()
                if had_flag:
                    text = text.split("\n")[0].split(". ")[0]
    elif text.count("oxed{") > 1:
        text = "\\boxed{" + text.split("oxed{")[-1]
    text = _mv_find_math_answer(text)
    for letter in "abcde":
        text = text.replace(f"({letter})", letter)
    for letter in "abcde":
        text = text.replace(f"{{{letter}}}", letter)
    return text.rstrip(".").lstrip(":").strip()


@lru_cache(maxsize=1)
def _latex_tools() -> tuple[Callable[[str], Any], dict[Any, Any], Any] | None:
    """The LaTeX parser, the `math`-module constants and sympy, imported on first use (heavy); None if absent."""
    try:
        import sympy
        from latex2sympy2_extended import latex2sympy
        from latex2sympy2_extended.latex2sympy2 import ConversionConfig
    except ImportError:
        return None
    config = ConversionConfig(interpret_as_mixed_fractions=False)
    parse = partial(latex2sympy, normalization_config=None, conversion_config=config)
    constants = {sympy.Symbol("e"): sympy.E, sympy.Symbol("pi"): sympy.pi, sympy.Symbol("tau"): 2 * sympy.pi}
    return parse, constants, sympy


def _mv_int_typed(expr: Any, sympy: Any) -> bool:
    """Whether Python would compute the official `eval(str(expr))` as an int: integer literals (latex2sympy2 reads
    "2.0" as the Rational 2) combined by +, -, *, non-negative integer powers and factorials; any division, root or
    `math` function gives a float."""
    if isinstance(expr, sympy.Number):
        return bool(expr.is_Integer or (expr.is_Float and float(expr).is_integer()))
    if isinstance(expr, sympy.Add | sympy.Mul):
        return all(_mv_int_typed(arg, sympy) for arg in expr.args)
    if isinstance(expr, sympy.Pow):
        return _mv_int_typed(expr.base, sympy) and bool(expr.exp.is_Integer and expr.exp >= 0)
    if isinstance(expr, sympy.factorial):
        return _mv_int_typed(expr.args[0], sympy)
    return False


def _mv_value(text: str) -> int | float | None:
    """Stand-in for the official `eval(str(latex2sympy(text)))`: a finite int or float, or None if not a number."""
    tools = _latex_tools()
    if tools is None:
        for cast in (int, float):
            try:
                value = cast(text)
            except ValueError:
                continue
            return value if math.isfinite(value) else None
        return None
    if len(text) > _MV_MAX_NUMERIC_CHARS:
        return None
    parse, constants, sympy = tools
    try:
        expr = parse(text)
        if isinstance(expr, sympy.Integer):  # exact, however long (evalf keeps 15 digits)
            return int(expr)
        for node in sympy.preorder_traversal(expr):
            if node is sympy.E:  # printed "E", a NameError for the official eval (exp(x) is fine: math.exp)
                return None
            if isinstance(node, sympy.Function):
                name = type(node).__name__
                if not hasattr(math, name):  # Abs, ceiling, Max, ...: NameError for the official eval
                    return None
                if name == "factorial" and not abs(float(node.args[0].evalf(subs=constants))) <= _MV_MAX_FACTORIAL:
                    return None
        value = float(expr.evalf(subs=constants))
        if not math.isfinite(value):
            return None
        return int(value) if _mv_int_typed(expr, sympy) and abs(value) < 2**53 else value
    except Exception:  # parse errors, free symbols, complex values, intervals, overflow, ...
        return None


def _mv_eval_tuple(text: str) -> str:
    """MATH-V `eval_tuple`: "(x,y,...)" / "[x,y,...]" with each element rounded to 2 decimals; any failure -> as is."""
    items = text[1:-1].split(",")
    if len(items) < 2 or (text[0], text[-1]) not in {("(", ")"), ("[", "]")}:
        return text
    out = []
    for item in items:
        if "infty" in item or item in ("a", "-a"):
            out.append(item)
            continue
        value = _mv_value(item)
        if value is None:
            return text
        out.append(str(round(value, 2)))
    return text[0] + ",".join(out) + text[-1]


def _mv_is_equal(gold: str, pred: str) -> bool:
    """MATH-V `is_equal`: case-insensitive string equality, then tuple evaluation, then numbers equal to 2 decimals."""
    gold, pred = gold.lower(), pred.lower()
    if not gold.replace(" ", "") or not pred.replace(" ", ""):
        return False
    if gold.strip() == pred.strip():
        return True
    gold, pred = _mv_eval_tuple(gold), _mv_eval_tuple(pred)
    if gold == pred:
        return True
    gold_value, pred_value = _mv_value(gold), _mv_value(pred)
    return gold_value is not None and pred_value is not None and round(gold_value, 2) == round(pred_value, 2)


def mathvision_correct(response: str, answer: str, options: Sequence[str]) -> bool:
    """MATH-V correctness: the extraction `is_equal` to the gold answer or to the gold option's text.

    Why: the official `evaluate` marks `is_equal(gt, pred) or is_equal(options[ord(gt) - 65], pred)`, so
    restating the option's value (for example "\\boxed{\\frac{1}{2}}") is as good as its letter. Source: mathllm/MATH-V
    `evaluation/evaluate.py::evaluate`, `evaluation/utils.py::is_equal`.
    """
    pred = mathvision_extract(response)
    index = ord(answer) - ord("A") if len(answer) == 1 else -1
    option_text = options[index] if options and 0 <= index < len(options) else ""
    return _mv_is_equal(answer, pred) or _mv_is_equal(option_text, pred)


# ------------------------------------------------------------------------------------------------------ We-Math

_WEMATH_DROP_RE = re.compile(r"[<>:.]")
_WEMATH_COUNTS = ("IK", "IG", "CM_strict", "CM_loose", "RM_strict", "RM_loose")


def wemath_extract(response: str) -> str | None:
    """We-Math's official option extractor: text after the last "Answer" (case-sensitive), `<>:.` removed, stripped,
    first character if it is in A-H, else None.

    Why: the official template ends in "<Answer>: <<X>>" and the four-dimensional metrics use this parse as is
    (We-Math/We-Math `evaluation/four_dimensional_metrics.py::load_and_process_data`). "(B)", "**B**" or a
    lower-case word after "Answer" make it fail or give a wrong letter.
    """
    text = _WEMATH_DROP_RE.sub("", response.split("Answer")[-1].strip()).strip()
    return text[0] if text and text[0] in "ABCDEFGH" else None


def _wemath_joined(rows: Sequence[Mapping[str, Any]]) -> dict[int, list[tuple[list[bool | None], bool | None]]]:
    """The official left join of We-Math rows, per step count: one (sub-question jokers, multi joker) per joined row.

    Why: both official scripts (`four_dimensional_metrics.py` and `accuracy.py`, `process_steps_data`) merge the
    `Nsteps_2` .. `Nsteps_N` and `Nsteps_multi` rows onto the `Nsteps_1` rows by "ID" with pandas left joins, so a
    problem without a `_1` row is dropped, a missing row joins as None (NaN) and duplicate rows multiply.
    """
    by_key: dict[str, dict[Any, list[bool]]] = {}  # key -> ID -> jokers, in row order
    for row in rows:
        by_key.setdefault(row["key"], {}).setdefault(row["ID"], []).append(bool(row["joker"]))
    joined: dict[int, list[tuple[list[bool | None], bool | None]]] = {}
    for steps in (2, 3):
        others = [f"{steps}steps_{i}" for i in range(2, steps + 1)] + [f"{steps}steps_multi"]
        joined[steps] = []
        for problem_id, firsts in by_key.get(f"{steps}steps_1", {}).items():
            columns: list[list[bool | None]] = [list(firsts)]
            columns += [list(by_key.get(key, {}).get(problem_id, [None])) for key in others]
            joined[steps] += [(subs, multi) for *subs, multi in product(*columns)]
    return joined


def wemath_four_dim(rows: Sequence[Mapping[str, Any]], total: int = 525) -> dict[str, Any]:
    """We-Math four-dimensional metrics from per-row correctness, computed as the official script does.

    Why: We-Math reports IK/IG/CM/RM counts and the strict and loose scores, not plain accuracy. The official
    script left-joins the sub-question and multi-step rows on "ID", starting from the `Nsteps_1` rows (see
    `_wemath_joined`): problems without a `_1` row are dropped, a missing row counts as neither right nor wrong, and
    duplicate rows multiply. Score = (total - 0.5*IG - RM - IK) / total, with RM_strict or RM_loose. The official
    denominator is a hard-coded 525 even for a subset. Source: We-Math/We-Math `evaluation/four_dimensional_metrics.py`
    (`process_steps_data`, `calculate_metrics`, `compute_final_scores`, `update_main_results_df`).

    `rows`: dicts with "ID", "key" (`2steps_1`, `2steps_2`, `2steps_multi`, `3steps_1` .. `3steps_3`,
    `3steps_multi`) and "joker" (bool, whether the row's answer is right).
    """
    counts = dict.fromkeys(_WEMATH_COUNTS, 0)
    for joined in _wemath_joined(rows).values():
        for subs, multi in joined:
            all_right = all(s is True for s in subs)
            any_right = any(s is True for s in subs)
            all_wrong = all(s is False for s in subs)
            any_wrong = any(s is False for s in subs)
            if multi is True:
                counts["CM_strict"] += all_right
                counts["CM_loose"] += any_right
                counts["RM_strict"] += any_wrong
                counts["RM_loose"] += all_wrong
            elif multi is False:
                counts["IG"] += all_right
                counts["IK"] += any_wrong

    def score(rm: int) -> float:
        return (total - 0.5 * counts["IG"] - rm - counts["IK"]) / total

    def rm_rate(kind: str) -> float | None:
        denominator = counts[f"CM_{kind}"] + counts[f"RM_{kind}"]
        return counts[f"RM_{kind}"] / denominator if denominator else None

    rates = {key: counts[key] / total for key in ("IK", "IG", "CM_strict", "CM_loose")}
    rates |= {"RM_strict": rm_rate("strict"), "RM_loose": rm_rate("loose")}
    return {
        "counts": counts,
        "score_strict": score(counts["RM_strict"]),
        "score_loose": score(counts["RM_loose"]),
        "rates": rates,
        "total": total,
    }


def wemath_step_accuracy(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """We-Math's per-step accuracies: S1 over the one-step sub-questions, S2 / S3 over the two- / three-step problems.

    Why: We-Math reports One-step (S1), Two-step (S2) and Three-step (S3) accuracy beside the four-dimensional
    scores. Officially S1 is the mean joker of every sub-question cell (`Nsteps_1` .. `Nsteps_N`) of the joined
    two- and three-step tables, S2 and S3 the mean joker of the `2steps_multi` / `3steps_multi` column, pandas means
    that skip the None (NaN) a missing row joins as. The join's quirks (`_wemath_joined`) therefore apply: rows of a
    problem without a `_1` row are ignored, duplicates count once per joined row. Source: We-Math/We-Math
    `evaluation/accuracy.py` (`process_steps_data`, `evaluate_steps`, `update_main_results_df`). Not reproduced:
    its per-domain accuracies, which need `data/knowledge_structure_nodes.json`; S1 skips that file's left merge on
    the concept's leaf name, which would only change S1 if a leaf name occurred twice there (none did when read).

    Returns {"s1", "s2", "s3"}: fractions (None when nothing is counted, where pandas gives NaN), and "counts": the
    number of cells each is the mean of.
    """
    joined = _wemath_joined(rows)
    cells = {
        "s1": [s for table in joined.values() for subs, _ in table for s in subs if s is not None],
        "s2": [multi for _, multi in joined[2] if multi is not None],
        "s3": [multi for _, multi in joined[3] if multi is not None],
    }
    out: dict[str, Any] = {key: sum(flags) / len(flags) if flags else None for key, flags in cells.items()}
    out["counts"] = {key: len(flags) for key, flags in cells.items()}
    return out


# ------------------------------------------------------------------------------------- VLMEvalKit can_infer

_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_OPTION_PUNCT = str.maketrans(dict.fromkeys(".()[],:;!*#{}", " "))
_ANSWER_IS_RE = re.compile(r"answer\s+is\s+\**([a-d])", re.IGNORECASE)  # not word-bounded: "is definitely" -> D


def _infer_option(answer: str, choices: Mapping[str, str]) -> str | bool:
    """`can_infer_option`: refusal -> 'Z'; exactly one choice letter as a token, within the last four tokens
    (official test `index > len(tokens) - 5`); no letter but a 'Z' token -> 'Z'; else the "answer is X" rescue."""
    if "Failed to obtain answer via API" in answer:
        return False
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    tokens = answer.translate(_OPTION_PUNCT).split()
    present = [letter for letter in choices if letter in tokens]
    if len(present) == 1:
        if tokens.index(present[0]) > len(tokens) - 5:
            return present[0]
    elif not present and "Z" in tokens:
        return "Z"
    match = _ANSWER_IS_RE.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return False


def _infer_text(answer: str, choices: Mapping[str, str]) -> str | bool:
    """`can_infer_text`: the unique choice whose lower-cased text is inside the lower-cased answer, when the answer is
    at most twice as long as all choice texts together."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(text)) for text in choices.values()):
        return False
    if any(key not in string.ascii_uppercase for key in choices):
        raise ValueError(f"choice keys must be upper-case letters, got {list(choices)}")
    candidates = [key for key, text in choices.items() if str(text).lower() in answer]
    return candidates[0] if len(candidates) == 1 else False


def mc_infer(answer: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit `can_infer`: a choice letter, 'Z' (refusal / none of the above), or False when nothing is inferred.

    Why: VLMEvalKit's MCQ benchmarks (and its MathVision path) run this rule first and call a GPT judge only
    when it returns False. Reproducing it shows which answers count without a judge. Source:
    open-compass/VLMEvalKit `vlmeval/utils/matching_util.py` (`can_infer`, `can_infer_option`, `can_infer_text`).
    """
    answer = str(answer)
    return _infer_option(answer, choices) or _infer_text(answer, choices)
