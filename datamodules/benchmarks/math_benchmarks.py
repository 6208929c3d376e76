"""Math reasoning benchmarks of the paper's Table 6: MathVision, MathVerse, WeMath and MMK12 (MathVista and MMMU live
in their own modules). Official prompts, chain-of-thought budgets (4,096 new tokens by default) and `mc_only`.

Scoring (reference `benchmarks_grounding_math.md` §4–§9):
- MathVision: the official rule-based extraction and `is_equal` (`scoring.mathvision_correct`).
- WeMath: the official extractor (`scoring.wemath_extract`) per row, plus the official four-dimensional strict /
  loose scores over composite problems (`scoring.wemath_four_dim`, denominator 525 as the official script) and the
  one- / two- / three-step accuracies S1 / S2 / S3 (`scoring.wemath_step_accuracy`, as `evaluation/accuracy.py`).
- MathVerse and MMK12: the official scorers ask a GPT judge. We score rule-based instead (an approximation, logged as
  `fallback` when the rule cannot decide): the last `\\boxed{}` (or the text after "answer is"), then VLMEvalKit's
  `can_infer` against the choices (`scoring.mc_infer`); free-form MathVerse answers with math-verify.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from datamodules.benchmarks.base import Benchmark, EvalItem, LazyEvalItem, ScoreResult, image_from_cell, mc_filter
from datamodules.benchmarks.base import read_parquet_rows as _read_parquet
from datamodules.scoring import (
    final_answer,
    math_match,
    mathvision_correct,
    mc_infer,
    wemath_extract,
    wemath_four_dim,
    wemath_step_accuracy,
)

MATHVISION_PROMPT = (
    'Please solve the problem step by step and put your answer in one "\\boxed{{}}". If it is a multiple choice '
    'question, only one letter is allowed in the "\\boxed{{}}".\n{question}\n{options}'
)
WEMATH_PROMPT = (
    "Now, we require you to solve a multiple-choice math question. Please briefly describe your thought process and "
    "provide the final answer(option).\nQuestion: {question}\nOption: {option}\nRegarding the format, please answer "
    "following the template below, and be sure to include two <> symbols:\n<Thought process>: <<your thought "
    "process>> <Answer>: <<your option>>"
)
MMK12_PROMPT = (
    "Answer the following question: {question}\nPlease reason step by step, and put your final answer within "
    "\\boxed{{}}."
)
MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")
_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])[.):：]\s*(.+?)\s*$", re.MULTILINE)


def inline_choices(question: str) -> dict[str, str]:
    """Choices written in the question as `A. ...` / `(A) ...` / `A: ...` lines (MMK12, MathVerse); empty unless they
    run A, B, ... without a gap (a partial parse would make some letters unanswerable)."""
    found = {letter: text for letter, text in _CHOICE_LINE.findall(question or "")}
    expected = [chr(65 + i) for i in range(len(found))]
    return found if len(found) >= 2 and sorted(found) == expected else {}


def letters_only(choices: dict[str, str], letters: str = "ABCDE") -> dict[str, str]:
    """The parsed choices, or bare letters with empty texts (so `mc_infer` matches letter tokens only, never a letter
    inside a word such as the C of "5 cm")."""
    return choices or dict.fromkeys(letters, "")


def read_rows(name: str, path: Path, required: list[str]) -> list[dict[str, Any]]:
    """Rows of a parquet file, a JSON list or a JSONL file, with the required fields checked."""
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path} not found")
    if path.suffix == ".parquet":
        return _read_parquet(name, path, required)
    text = path.read_text(encoding="utf-8")
    rows = (
        [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".jsonl"
        else json.loads(text)
    )
    for number, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"{name}: {path} record {number} lacks {missing}; is this the official file?")
    return rows


class MathBenchmark(Benchmark):
    """Shared options: `mc_only` keeps the multiple-choice items (the paper scores only those), `limit`-free."""

    def __init__(self, name: str, mc_only: bool = False, max_new_tokens: int = 4096) -> None:
        self.name, self.mc_only, self.max_new_tokens = name, mc_only, max_new_tokens

    def keep(self, items: list[EvalItem]) -> list[EvalItem]:
        if not items:
            raise ValueError(self._error("no items"))
        return mc_filter(self.name, items, lambda item: item.meta["mc"], self.mc_only)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        keys = ("subject", "level", "version")
        return {key: [str(item.meta[key])] for key in keys if item.meta.get(key) is not None}


class MathVision(MathBenchmark):
    """MathVision (`MathLLMs/MathVision`): `test` / `testmini` parquet, or the GitHub `data/test.jsonl` + `images/`.
    Multiple choice = non-empty `options`."""

    def __init__(
        self,
        path: str,
        name: str = "mathvision",
        image_root: str | None = None,
        subjects: list[str] | None = None,
        mc_only: bool = False,
        max_new_tokens: int = 4096,
    ) -> None:
        super().__init__(name, mc_only, max_new_tokens)
        self.path, self.image_root, self.subjects = path, image_root, subjects

    def load(self) -> list[EvalItem]:
        path = Path(self.path)
        rows = read_rows(self.name, path, ["id", "question", "options", "answer"])
        base = Path(self.image_root) if self.image_root else path.parent
        items = []
        for row in rows:
            if self.subjects and row.get("subject") not in self.subjects:
                continue
            options = list(row.get("options") or [])
            shown = (
                ""
                if options == list("ABCDE")[: len(options)]
                else "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
            )
            image = image_from_cell(row.get("decoded_image"), base) or image_from_cell(row.get("image"), base)
            if image is None:
                raise ValueError(self._error(f"{path}: id {row['id']} has no image"))
            meta = {"mc": bool(options), "options": options, "subject": row.get("subject"), "level": row.get("level")}
            prompt = MATHVISION_PROMPT.format(question=row["question"], options=shown)
            items.append(LazyEvalItem(str(row["id"]), prompt, [image], str(row["answer"]), meta))
        return self.keep(items)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        from datamodules.scoring import mathvision_extract

        return ScoreResult(mathvision_correct(response, item.gold, item.meta["options"]), mathvision_extract(response))


class MathVerse(MathBenchmark):
    """MathVerse testmini (`AI4Math/MathVerse`): parquet or JSON; `versions` selects problem versions;
    multiple choice = `question_type == 'multi-choice'`. Prompt: the official `query_cot` (or `query_wo`)."""

    def __init__(
        self,
        path: str,
        name: str = "mathverse",
        image_root: str | None = None,
        versions: list[str] | None = None,
        prompt: str = "query_cot",
        mc_only: bool = False,
        max_new_tokens: int = 4096,
    ) -> None:
        super().__init__(name, mc_only, max_new_tokens)
        unknown = [v for v in versions or [] if v not in MATHVERSE_VERSIONS]
        if unknown or prompt not in ("query_cot", "query_wo"):
            raise ValueError(f"{name}: versions must be among {MATHVERSE_VERSIONS} and prompt query_cot | query_wo")
        self.path, self.image_root, self.versions, self.prompt = path, image_root, versions, prompt

    def load(self) -> list[EvalItem]:
        path = Path(self.path)
        rows = read_rows(self.name, path, ["sample_index", "question", "answer", "question_type", self.prompt])
        base = Path(self.image_root) if self.image_root else path.parent
        items = []
        for row in rows:
            version = row.get("problem_version")
            if self.versions and version not in self.versions:
                continue
            image = image_from_cell(row.get("image"), base)
            meta = {
                "mc": row["question_type"] == "multi-choice",
                "version": version,
                "choices": inline_choices(str(row.get("question") or "")),
                "subject": (row.get("metadata") or {}).get("subject"),
            }
            gold = str(row["answer"]).strip().strip("()")
            items.append(
                LazyEvalItem(str(row["sample_index"]), str(row[self.prompt]), [image] if image else [], gold, meta)
            )
        return self.keep(items)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        answer = final_answer(response)
        if item.meta["mc"]:
            choice = mc_infer(answer, letters_only(item.meta["choices"]))
            return ScoreResult(choice == item.gold, str(choice), fallback=choice is False)
        return ScoreResult(math_match(answer, item.gold), answer)


class WeMath(MathBenchmark):
    """WeMath testmini (`We-Math/We-Math`, 1,740 rows / 525 composite problems, all multiple choice): the official
    prompt and extractor; logs the four-dimensional strict / loose scores (`val/wemath/score_strict`, `score_loose`)
    and the step accuracies (`val/wemath/s1_acc`, `s2_acc`, `s3_acc`) besides row accuracy."""

    def __init__(
        self, path: str, name: str = "wemath", image_root: str | None = None, max_new_tokens: int = 4096
    ) -> None:
        super().__init__(name, False, max_new_tokens)
        self.path, self.image_root = path, image_root

    def load(self) -> list[EvalItem]:
        path = Path(self.path)
        rows = read_rows(self.name, path, ["ID", "question", "option", "answer", "key"])
        base = Path(self.image_root) if self.image_root else path.parent
        items = []
        for number, row in enumerate(rows):
            image = image_from_cell(row.get("image"), base) or image_from_cell(row.get("image_path"), base)
            meta = {"mc": True, "ID": row["ID"], "key": row["key"], "subject": row.get("knowledge concept")}
            prompt = WEMATH_PROMPT.format(question=row["question"], option=row["option"])
            items.append(
                LazyEvalItem(
                    f"{row['ID']}/{row['key']}/{number}", prompt, [image] if image else [], str(row["answer"]), meta
                )
            )
        return self.keep(items)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        extracted = wemath_extract(response)
        return ScoreResult(extracted == item.gold, extracted)

    def aggregate(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, float]:
        rows = [{"ID": i.meta["ID"], "key": i.meta["key"], "joker": r["correct"]} for i, r in zip(items, results)]
        four, steps = wemath_four_dim(rows), wemath_step_accuracy(rows)
        metrics = {"score_strict": 100.0 * four["score_strict"], "score_loose": 100.0 * four["score_loose"]}
        return metrics | {f"{key}_acc": 100.0 * steps[key] for key in ("s1", "s2", "s3") if steps[key] is not None}


class MMK12(MathBenchmark):
    """MMK12 (`FanqingM/MMK12`) test parquet: 2,000 four-way multiple-choice questions (math, physics, chemistry,
    biology), choices inline; `subjects` selects. The official judge is GPT-4o; ours is rule-based (see module)."""

    def __init__(
        self, path: str, name: str = "mmk12", subjects: list[str] | None = None, max_new_tokens: int = 4096
    ) -> None:
        super().__init__(name, False, max_new_tokens)
        self.path, self.subjects = path, subjects

    def load(self) -> list[EvalItem]:
        path = Path(self.path)
        items = []
        for row in read_rows(self.name, path, ["id", "subject", "image", "question", "answer"]):
            if self.subjects and row["subject"] not in self.subjects:
                continue
            choices = inline_choices(row["question"])
            meta = {"mc": bool(choices), "choices": choices, "subject": row["subject"]}
            image = image_from_cell(row["image"], path.parent)
            prompt = MMK12_PROMPT.format(question=row["question"])
            items.append(
                LazyEvalItem(str(row["id"]), prompt, [image] if image else [], str(row["answer"]).strip(), meta)
            )
        return self.keep(items)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        choice = mc_infer(final_answer(response), letters_only(item.meta["choices"], "ABCD"))
        return ScoreResult(choice == item.gold, str(choice), fallback=choice is False)
