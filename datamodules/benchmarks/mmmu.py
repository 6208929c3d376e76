"""MMMU validation (900 items, 30 subjects): reader, official prompt, official parsing and scoring.

Prompt (github.com/MMMU-Benchmark/MMMU, `mmmu/configs/llava1.5.yaml` after YAML folding):
  MC:   "{question}\n(A) opt\n(B) opt\n\nAnswer with the option's letter from the given choices directly."
  open: "{question}\nAnswer the question using a single word or phrase."
`<image k>` placeholders stay in the text.

Images (our choice, differs from the official LLaVA baseline that feeds only image_1): every image referenced by
`<image k>` in the question and then in the options, in order of first occurrence, so images referenced only in
options are included; non-null images never referenced (4 validation items) are appended in column order, so every
item keeps at least its image_1.
"""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path
from typing import Any

from datamodules.benchmarks.base import (
    Benchmark,
    EvalItem,
    LazyEvalItem,
    ScoreResult,
    image_from_cell,
    mc_filter,
    read_parquet_rows,
)
from datamodules.scoring import (
    mmmu_eval_multi_choice,
    mmmu_eval_open,
    mmmu_parse_multi_choice,
    mmmu_parse_open,
)

DOMAIN_CAT2SUB_CAT: dict[str, list[str]] = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": [
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": [
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ],
}
SUBJECT2DISCIPLINE = {subject: domain for domain, subjects in DOMAIN_CAT2SUB_CAT.items() for subject in subjects}

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
REQUIRED_COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")
_IMAGE_REF = re.compile(r"<image (\d+)>")


def subject_of(item_id: str) -> str:
    """`validation_Architecture_and_Engineering_14` -> `Architecture_and_Engineering` (between first and last `_`)."""
    return "_".join(item_id.split("_")[1:-1])


def build_prompt(question: str, options: list[str], question_type: str) -> str:
    """The official prompt text (construct_prompt with the llava1.5.yaml templates, empty task_instructions)."""
    question = question.strip()
    if question_type == "multiple-choice":
        example = "".join(f"({chr(ord('A') + i)}) {option}\n" for i, option in enumerate(options))
        return f"{question}\n{example}\n{MC_INSTRUCTION}"
    return f"{question}\n{OPEN_INSTRUCTION}"


def parse_gold(answer: str, question_type: str) -> str | list[str]:
    """MC gold is a letter; 3 open golds are stringified Python lists (`"['24/7', '3.429']"`): parse those safely."""
    if question_type != "multiple-choice" and answer.strip().startswith("["):
        try:
            value = ast.literal_eval(answer.strip())
        except (ValueError, SyntaxError):
            return answer
        if isinstance(value, list):
            return [str(v) for v in value]
    return answer


class MMMU(Benchmark):
    """MMMU (validation) from the Hugging Face parquet files.

    Args:
        path: a folder of per-subject folders `<path>/<Subject>/<split>-*.parquet` (MMMU/MMMU), or a merged copy
            (lmms-lab/MMMU): a `.parquet` file, or a folder holding `<split>-*.parquet` (directly or under `data/`).
        split: file prefix to read (`validation`; `dev` also works; `test` has no answers).
        subjects: optional subset of subject names (e.g. `["Art", "Physics"]`); default all found.
        mc_only: keep the multiple-choice items only (`question_type == 'multiple-choice'`; the paper scores only
            those).
    """

    name = "mmmu"

    def __init__(
        self, path: str, split: str = "validation", subjects: list[str] | None = None, mc_only: bool = False
    ) -> None:
        self.mc_only = mc_only
        self.path = path
        self.split = split
        self.subjects = subjects
        unknown = sorted(set(subjects or []) - set(SUBJECT2DISCIPLINE))
        if unknown:
            raise ValueError(self._error(f"unknown subjects {unknown}; valid: {sorted(SUBJECT2DISCIPLINE)}"))

    def _files(self) -> list[Path]:
        root = Path(self.path)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise FileNotFoundError(self._error(f"path {root} does not exist (expected MMMU parquet files)"))
        pattern = f"{self.split}-*.parquet"
        merged = sorted(root.glob(pattern)) or sorted(root.glob(f"data/{pattern}"))
        if merged:
            return merged
        subjects = self.subjects or sorted(p.name for p in root.iterdir() if p.name in SUBJECT2DISCIPLINE)
        files = []
        for subject in subjects:
            found = sorted((root / subject).glob(pattern))
            if not found:
                raise FileNotFoundError(self._error(f"no {root / subject / pattern} for subject {subject}"))
            files.extend(found)
        if not files:
            raise FileNotFoundError(
                self._error(
                    f"no parquet files under {root}: expected <Subject>/{pattern} folders (MMMU/MMMU) "
                    f"or {pattern} (merged lmms-lab/MMMU)"
                )
            )
        return files

    def load(self) -> list[EvalItem]:
        items = []
        for file in self._files():
            for index, row in enumerate(read_parquet_rows(self.name, file, REQUIRED_COLUMNS)):
                subject = subject_of(str(row["id"]))
                if self.subjects is not None and subject not in self.subjects:
                    continue
                items.append(self._item(row, file, index, subject))
        if not items:
            raise ValueError(self._error(f"no items read from {self.path} (split {self.split!r}, {self.subjects})"))
        items = mc_filter(self.name, items, lambda item: item.meta["question_type"] == "multiple-choice", self.mc_only)
        return sorted(items, key=_order_key)

    def _item(self, row: dict[str, Any], file: Path, index: int, subject: str) -> EvalItem:
        where = f"{file} row {index} (id {row['id']})"
        if subject not in SUBJECT2DISCIPLINE:
            raise ValueError(self._error(f"{where}: unknown subject {subject!r} in the id"))
        try:
            options = ast.literal_eval(row["options"]) if isinstance(row["options"], str) else list(row["options"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(self._error(f"{where}: options are not a Python list literal: {err}")) from None
        options = [str(option) for option in options]
        question_type = str(row["question_type"])
        letters = [chr(ord("A") + i) for i in range(len(options))]
        text = "\n".join([row["question"], *options])
        order = list(dict.fromkeys(int(k) for k in _IMAGE_REF.findall(text)))
        order += [k for k in range(1, 8) if k not in order]
        base = file.parent
        sources = [image_from_cell(row.get(f"image_{k}"), base) for k in order]
        images = [source for source in sources if source is not None]
        meta = {
            "subject": subject,
            "discipline": SUBJECT2DISCIPLINE[subject],
            "question_type": question_type,
            "all_choices": letters,
            "index2ans": dict(zip(letters, options)),
            "image_order": [k for k, source in zip(order, sources) if source is not None],
            "topic_difficulty": row.get("topic_difficulty"),
            "subfield": row.get("subfield"),
        }
        prompt = build_prompt(row["question"], options, question_type)
        return LazyEvalItem(str(row["id"]), prompt, images, parse_gold(str(row["answer"]), question_type), meta)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        response = response.strip()
        if item.meta["question_type"] == "multiple-choice":
            parsed = mmmu_parse_multi_choice(response, item.meta["all_choices"], item.meta["index2ans"])
            fallback = parsed is None
            if fallback:
                parsed = rng.choice(item.meta["all_choices"])
            return ScoreResult(mmmu_eval_multi_choice(item.gold, parsed), parsed, fallback)
        candidates = mmmu_parse_open(response)
        return ScoreResult(mmmu_eval_open(item.gold, candidates), repr(candidates))

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        return {
            "subject": [item.meta["subject"]],
            "discipline": [item.meta["discipline"]],
            "question_type": [item.meta["question_type"]],
        }


def _order_key(item: EvalItem) -> tuple[str, int, str]:
    """Subject, then the item number, so both file layouts give the same order."""
    tail = item.id.rsplit("_", 1)[-1]
    return item.meta["subject"], int(tail) if tail.isdigit() else -1, item.id
