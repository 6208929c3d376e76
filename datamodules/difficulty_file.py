"""The difficulty file: one JSONL row per training item with its rollout outcome (DC-SFT step 2).

    {"id": str, "correct": int, "k": int, "pass_rate": float, "answers": [str, ...], "solution": str}

(`answers` and `solution` optional). Written by difficulty estimation (`callbacks/difficulty_writer.py`), read by
the datamodule's selection (`datamodules/tiers.py`), the tier report and `datamodules/export_tiers.py`. While an
estimate runs, each rank appends its rows to `<output>.shards/rank<r>.jsonl`; finished rows are skipped on rerun.
Tests: `python -m pytest tests/test_tiers.py tests/test_difficulty.py -q`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.files import atomic_write_text
from datamodules.tiers import assign_tier

REQUIRED_KEYS = ("id", "correct", "k", "pass_rate")
RERUN_HINT = (
    "Re-run difficulty estimation on this training file: "
    "python train.py predict --config configs/<experiment>/difficulty.yaml"
)


@dataclass(frozen=True)
class DifficultyRow:
    """Rollout outcome of one training item: `correct` of `k` sampled answers were right."""

    id: str
    correct: int
    k: int
    pass_rate: float
    answers: tuple[str, ...] | None = None
    solution: str | None = None

    @property
    def tier(self) -> str:
        return assign_tier(self.correct, self.k)

    def to_json(self) -> dict:
        row: dict = {"id": self.id, "correct": self.correct, "k": self.k, "pass_rate": self.pass_rate}
        if self.answers is not None:
            row["answers"] = list(self.answers)
        if self.solution is not None:
            row["solution"] = self.solution
        return row


def _parse_row(obj: object, where: str) -> DifficultyRow:
    """Validate one decoded JSONL row; `where` is "file:line" for the error message."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in obj]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing} (required: {list(REQUIRED_KEYS)})")
    rid, correct, k = obj["id"], obj["correct"], obj["k"]
    if not isinstance(rid, str):
        raise ValueError(f"{where}: 'id' must be a string, got {rid!r}")
    for name, value in (("correct", correct), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}: {name!r} must be an integer, got {value!r}")
    if k < 1 or not 0 <= correct <= k:
        raise ValueError(f"{where}: 'correct' must be in 0..k with k >= 1, got correct={correct}, k={k}")
    answers = obj.get("answers")
    if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
        raise ValueError(f"{where}: 'answers' must be a list of strings")
    solution = obj.get("solution")
    if solution is not None and not isinstance(solution, str):
        raise ValueError(f"{where}: 'solution' must be a string, got {solution!r}")
    # Tiers use `correct`, intervals use `pass_rate`: refuse a file where the two disagree.
    if not isinstance(obj["pass_rate"], int | float) or abs(obj["pass_rate"] - correct / k) > 1e-6:
        raise ValueError(f"{where}: 'pass_rate' {obj['pass_rate']!r} != correct / k = {correct / k}")
    return DifficultyRow(rid, correct, k, correct / k, tuple(answers) if answers is not None else None, solution)


def read_difficulty(path: str | os.PathLike) -> dict[str, DifficultyRow]:
    """Read a difficulty JSONL file into {id: row}; errors name the file and the 1-based line. Blank lines skip."""
    rows: dict[str, DifficultyRow] = {}
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            row = _parse_row(obj, where)
            if row.id in rows:
                raise ValueError(f"{where}: duplicate id {row.id!r} (first seen on line {first_line[row.id]})")
            rows[row.id] = row
            first_line[row.id] = lineno
    return rows


def write_difficulty(path: str | os.PathLike, rows: Iterable[DifficultyRow] | Mapping[str, DifficultyRow]) -> None:
    """Write rows as JSONL atomically (a crashed estimator never leaves a truncated file)."""
    values = rows.values() if isinstance(rows, Mapping) else rows
    text = "".join(json.dumps(row.to_json(), ensure_ascii=False) + "\n" for row in values)
    atomic_write_text(path, text)


def _preview(ids: list[str], n: int = 5) -> str:
    return ", ".join(repr(i) for i in ids[:n]) + (", ..." if len(ids) > n else "")


def check_matches(
    train_ids: list[str],
    difficulty: Mapping[str, DifficultyRow],
    train_file: str,
    difficulty_file: str,
    k: int | None = None,
) -> None:
    """Refuse a difficulty file computed for another training file or another k, listing every problem at once."""
    known = set(difficulty)
    train_set = set(train_ids)
    problems = []
    missing = [i for i in train_ids if i not in known]
    if missing:
        problems.append(f"{len(missing)} training id(s) missing from the difficulty file (first: {_preview(missing)})")
    extra = [i for i in difficulty if i not in train_set]
    if extra:
        problems.append(f"{len(extra)} id(s) in the difficulty file are not in the training file ({_preview(extra)})")
    ks = sorted({row.k for row in difficulty.values()})
    if len(ks) > 1:
        problems.append(f"mixed k values {ks} in the difficulty file")
    if k is not None and any(v != k for v in ks):
        problems.append(f"k = {ks} in the difficulty file but the config expects k = {k}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(
            f"Difficulty file {difficulty_file} does not match training file {train_file}:\n{lines}\n{RERUN_HINT}"
        )


def shard_dir(output: str | os.PathLike) -> Path:
    """Where ranks append their rows while an estimate runs: `<output>.shards/`."""
    return Path(f"{output}.shards")


def read_shard_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of one rank's shard; a line cut by a kill is skipped (that item is simply redone)."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["id"]] = row
    return rows


def done_rows(output: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Rows already computed for `output`: the finished file (if any) plus every rank's shard."""
    output = Path(output)
    rows: dict[str, dict[str, Any]] = {}
    if output.exists():
        rows.update({r.id: r.to_json() for r in read_difficulty(output).values()})
    shards = shard_dir(output)
    for shard in sorted(shards.glob("rank*.jsonl")) if shards.exists() else []:
        rows.update(read_shard_rows(shard))
    return rows
