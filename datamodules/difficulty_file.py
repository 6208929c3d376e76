"""The difficulty file: one JSONL row per training item with its rollout outcome (DC-SFT step 2).

    {"id": str, "correct": int, "k": int, "pass_rate": float, "answers": [str, ...], "solution": str}

(`answers` and `solution` optional). Written by difficulty estimation (`callbacks/difficulty_writer.py`), read by
the datamodule's selection (`datamodules/tiers.py`), the tier report and `datamodules/export_tiers.py`. While an
estimate runs, each rank appends its rows to `<output>.shards/rank<r>.jsonl`; finished rows are skipped on rerun.
Tests: `python -m pytest tests/test_tiers.py tests/test_difficulty.py -q`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.files import atomic_write_text
from datamodules.tiers import assign_tier

REQUIRED_KEYS = ("id", "correct", "k", "pass_rate")
RERUN_HINT = "Re-run difficulty estimation on this training file: python scripts/runs.py <experiment>/difficulty"


@dataclass(frozen=True)
class DifficultyRow:
    """Rollout outcome of one training item: `correct` of `k` sampled answers were right."""

    id: str
    correct: int
    k: int
    pass_rate: float
    answers: tuple[str, ...] | None = None
    solution: str | None = None
    images: tuple[str, ...] | None = None  # image file names: with `solution`, identifies the item (index ids)

    @property
    def tier(self) -> str:
        return assign_tier(self.correct, self.k)

    def to_json(self) -> dict:
        row: dict = {"id": self.id, "correct": self.correct, "k": self.k, "pass_rate": self.pass_rate}
        if self.answers is not None:
            row["answers"] = list(self.answers)
        if self.solution is not None:
            row["solution"] = self.solution
        if self.images is not None:
            row["images"] = list(self.images)
        return row

    @classmethod
    def from_json(cls, obj: dict) -> DifficultyRow:
        """A row from its (already validated) JSON form."""
        answers, images = obj.get("answers"), obj.get("images")
        return cls(
            obj["id"],
            obj["correct"],
            obj["k"],
            obj["correct"] / obj["k"],
            tuple(answers) if answers is not None else None,
            obj.get("solution"),
            tuple(images) if images is not None else None,
        )


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
    images = obj.get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
        raise ValueError(f"{where}: 'images' must be a list of file names")
    # Tiers use `correct`, intervals use `pass_rate`: refuse a file where the two disagree.
    if not isinstance(obj["pass_rate"], int | float) or abs(obj["pass_rate"] - correct / k) > 1e-6:
        raise ValueError(f"{where}: 'pass_rate' {obj['pass_rate']!r} != correct / k = {correct / k}")
    return DifficultyRow.from_json(obj)


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
                raise ValueError(f"{where}: malformed JSON (column {err.colno}): {err.msg}") from None
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


def item_key(solution: str | None, images: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """What identifies an item across the two official formats: its answer and its image file names (not their
    folders, which image_root remaps per machine)."""
    return solution, tuple(Path(p).name for p in images)


def same_answer(a: str, b: str) -> bool:
    """Answers equal up to surrounding space, or boxes equal after int truncation (the official SFT files truncate
    grounding targets to integers, the GRPO files keep the floats)."""
    if a.strip() == b.strip():
        return True
    numbers_a, numbers_b = re.findall(r"-?\d+(?:\.\d+)?", a), re.findall(r"-?\d+(?:\.\d+)?", b)
    return len(numbers_a) == len(numbers_b) == 4 and [int(float(x)) for x in numbers_a] == [
        int(float(x)) for x in numbers_b
    ]


def check_items(
    items: Mapping[str, tuple[str | None, tuple[str, ...]]],
    difficulty: Mapping[str, DifficultyRow],
    train_file: str,
    difficulty_file: str,
) -> None:
    """Refuse rows that describe other items than the training file's (the released files have no ids, so index ids
    of another data file would otherwise match silently): answers and image names must agree where both are known."""
    bad = []
    for item_id, (solution, images) in items.items():
        row = difficulty.get(item_id)
        if row is None:
            continue
        if row.solution is not None and solution is not None and not same_answer(row.solution, solution):
            bad.append(f"id {item_id!r}: answer {row.solution!r} in the difficulty file, {solution!r} in the data")
        elif row.images is not None and tuple(row.images) != images:
            bad.append(f"id {item_id!r}: images {list(row.images)} in the difficulty file, {list(images)} in the data")
    if bad:
        shown = "\n  - ".join(bad[:5]) + (f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"Difficulty file {difficulty_file} describes other items than {train_file} ({len(bad)} of "
            f"{len(items)} differ):\n  - {shown}\n{RERUN_HINT}"
        )


# ------------------------------------------------------------------------------ fingerprints of an estimate


def meta_path(output: str | os.PathLike) -> Path:
    """The fingerprint of a complete output: `<output>.meta.json`."""
    return Path(f"{output}.meta.json")


def items_digest(items: Iterable[tuple[str, str | None, tuple[str, ...]]]) -> str:
    """sha256 over the predict file's (id, answer, image names), in order."""
    return hashlib.sha256(json.dumps(list(items), ensure_ascii=False).encode()).hexdigest()


def checkpoint_identity(path: str, adapter: str | None = None) -> dict[str, Any]:
    """What a difficulty estimate's model was: its path plus a content hash of its config and weights (a new cold
    start into the same folder changes it); a hub id is named as is."""
    identity: dict[str, Any] = {"path": path}
    for name, folder in (("model", path), ("adapter", adapter)):
        if folder is None:
            continue
        root = Path(folder)
        if not root.is_dir():
            identity[name] = folder
            continue
        digest = hashlib.blake2b(digest_size=16)
        files = sorted(p for p in root.iterdir() if p.suffix in (".json", ".safetensors", ".bin") and p.is_file())
        for file in files:
            if "tokenizer" in file.name or file.name.startswith(("preprocessor", "processor", "chat_template")):
                continue  # the processor's files do not change what the model answers
            digest.update(file.name.encode())
            with open(file, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
        identity[name] = digest.hexdigest()
    return identity


def fingerprint_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty = the same estimate)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key, '<absent>')} -> {new.get(key, '<absent>')}")
    return out
