"""Difficulty tiers for DC-SFT: difficulty-file I/O, tier assignment, selections and ms-swift export.

DC-SFT (paper §2 steps 2-4) samples k = 8 answers per training prompt from the cold-started model, tiers each
prompt by its number of correct answers (easy k/k, medium 1..k-1, hard 0/k) and then runs plain SFT on a
subset: SFT-M (medium) or SFT-EM (easy + medium). Fig. 5 mixes a small share of hard items back into SFT-EM.
Everything here is pure and seeded (no model code), so a selection is reproducible from the difficulty file
alone. The difficulty file is JSONL, one row per training item::

    {"id": str, "correct": int, "k": int, "pass_rate": float, "answers": [str, ...], "solution": str}

(`answers` and `solution` optional). The tier report lives in `datamodules/tier_report.py`.
Tests: `python -m pytest tests/test_tiers.py -q`.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TIERS = ("easy", "medium", "hard")
PRESETS: dict[str, list[str] | None] = {
    "sft": None,  # all items: standard SFT
    "sft_m": ["medium"],  # SFT-M, the official quick-start variant
    "sft_em": ["easy", "medium"],  # SFT-EM, the paper's strongest variant (drop only hard)
    "sft_e": ["easy"],
    "sft_h": ["hard"],
}
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


def assign_tier(correct: int, k: int) -> str:
    """Paper §2 step 3: all right → easy, all wrong → hard, anything in between → medium."""
    if k < 1 or not 0 <= correct <= k:
        raise ValueError(f"need 0 <= correct <= k and k >= 1, got correct={correct}, k={k}")
    if correct == k:
        return "easy"
    return "hard" if correct == 0 else "medium"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder + os.replace, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def tier_counts(difficulty: Mapping[str, DifficultyRow], ids: Iterable[str] | None = None) -> dict[str, int]:
    """Number of items per tier (over `ids` if given, else the whole file)."""
    counts = dict.fromkeys(TIERS, 0)
    for item_id in difficulty if ids is None else ids:
        counts[difficulty[item_id].tier] += 1
    return counts


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


def preset_tiers(name: str) -> list[str] | None:
    """Tiers of a named preset (`sft`, `sft_m`, `sft_em`, `sft_e`, `sft_h`); None means all items."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    tiers = PRESETS[name]
    return None if tiers is None else list(tiers)


def select(
    ids: list[str],
    difficulty: Mapping[str, DifficultyRow],
    tiers: list[str] | None = None,
    pass_rate_range: tuple[float, float] | None = None,
    hard_share: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Ids kept for training, in the order of `ids`.

    Base selection: `tiers` or the closed interval `pass_rate_range` = [lo, hi] (neither = all items). With
    `hard_share` > 0, hard items not already selected are added (drawn without replacement by
    random.Random(seed)) until they make up `hard_share` of the final selection, as in the paper's Fig. 5:
    n_hard = round(hard_share * n_base / (1 - hard_share)).
    """
    if tiers is not None and pass_rate_range is not None:
        raise ValueError("give either tiers or pass_rate_range, not both")
    if tiers is not None:
        unknown = [t for t in tiers if t not in TIERS]
        if unknown:
            raise ValueError(f"unknown tier(s) {unknown}; valid tiers: {list(TIERS)}")
    if pass_rate_range is not None:
        lo, hi = pass_rate_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"pass_rate_range must satisfy 0 <= lo <= hi <= 1, got {pass_rate_range}")
    if not 0.0 <= hard_share < 1.0:
        raise ValueError(f"hard_share must be in [0, 1), got {hard_share}")
    missing = [i for i in ids if i not in difficulty]
    if missing:
        raise ValueError(f"{len(missing)} id(s) have no difficulty row (first: {_preview(missing)}); run check_matches")

    if tiers is not None:
        wanted = set(tiers)
        base = {i for i in ids if difficulty[i].tier in wanted}
        what = f"tiers={list(tiers)}"
    elif pass_rate_range is not None:
        base = {i for i in ids if lo <= difficulty[i].pass_rate <= hi}
        what = f"pass_rate in [{lo}, {hi}]"
    else:
        base, what = set(ids), "all items"

    selected = set(base)
    if hard_share > 0:
        n_hard = round(hard_share * len(base) / (1 - hard_share))
        pool = [i for i in dict.fromkeys(ids) if i not in base and difficulty[i].tier == "hard"]
        if n_hard > len(pool):
            raise ValueError(
                f"hard_share={hard_share} over {len(base)} base items ({what}) needs {n_hard} extra hard items, "
                f"but only {len(pool)} hard items are not already selected"
            )
        if n_hard == 0:
            warnings.warn(f"hard_share={hard_share} rounds to 0 hard items over {len(base)} base items", stacklevel=2)
        selected.update(random.Random(seed).sample(pool, n_hard))
        what += f" + hard_share={hard_share}"

    out = [i for i in ids if i in selected]
    if not out:
        raise ValueError(
            f"selection {what} is empty; tier counts of the {len(ids)} items: {tier_counts(difficulty, ids)}"
        )
    return out


def records_to_messages(problem_rows: Iterable[Mapping]) -> list[dict]:
    """Convert `{problem, solution, image}` rows (GRPO / rollout format) into the official ms-swift SFT rows."""
    out = []
    for n, row in enumerate(problem_rows):
        missing = [key for key in ("problem", "solution", "image") if key not in row]
        if missing:
            raise ValueError(f"row {n}: missing key(s) {missing} (need problem, solution, image)")
        out.append(
            {
                "messages": [
                    {"role": "user", "content": "<image>" + row["problem"]},
                    {"role": "assistant", "content": row["solution"]},
                ],
                "images": [row["image"]],
            }
        )
    return out


def export_messages_json(rows: Iterable[Mapping], path: str | os.PathLike) -> None:
    """Write official-format rows (`messages` + `images`) as one JSON list, atomically, for ms-swift users."""
    rows = list(rows)
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("messages"), list):
            raise ValueError(f"row {n}: expected a dict with a 'messages' list (ms-swift format)")
        if not isinstance(row.get("images", []), list):
            raise ValueError(f"row {n}: 'images' must be a list of paths")
    atomic_write_text(path, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
