"""Rollout-derived difficulty: GRPO's own group outcomes merged into a difficulty file.

Why: the DC-SFT difficulty file is one k-sample estimate from the cold-started model. A GRPO run samples G answers
for every prompt it trains on anyway; logging each group's outcome gives a fresher, free estimate under the current
policy (which items it has learned, which are still out of reach), to re-select tiers from.

Every GRPO run appends one JSON line per group to `<log dir>/rollouts.jsonl` (rank 0, after gathering all ranks):

    {"id": str, "step": int, "correct": int, "k": int, "solution": str, "images": [str, ...]}

(`solution` and `images` optional: they let the merged file be checked against the training data.) `correct` counts
the answers the main (first) reward scorer accepts. The command merges such logs into a difficulty file that
`read_difficulty`, the datamodule's selection and `export_tiers` read:

    python -m datamodules.rollout_difficulty runs/demo/grpo/version_0/rollouts.jsonl --out difficulty.jsonl
    python -m datamodules.rollout_difficulty LOG... --out F --mode ema --alpha 0.5 [--base difficulty.jsonl]

Observations are ordered by log file (as given: oldest run first), then by step; a line repeated for the same item
and step (a resumed run re-doing steps) counts once, the last one. Modes:

- `latest` (default): each item's last observation, as is (`correct` of `k`).
- `ema`: an exponential average of the pass rates, p <- alpha * correct / k + (1 - alpha) * p, starting from the
  first observation (or the `--base` row); written as correct = round(p * k) (halves up) of the last k, so tiers and
  `pass_rate` = correct / k stay consistent.

`--base` starts from an existing difficulty file: items never rolled out keep their row (the datamodule refuses a
difficulty file that lacks training items), and the command prints how the rolled-out items moved between its tiers
and the merged file's (`tier_report.tier_transitions`). Tests: `pytest tests/test_rollout_difficulty.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datamodules.difficulty_file import DifficultyRow, read_difficulty, write_difficulty
from datamodules.tier_report import format_transitions, tier_transitions
from datamodules.tiers import tier_counts

MODES = ("latest", "ema")


def rollout_row(
    item_id: str,
    step: int,
    correct: int,
    k: int,
    solution: str | None = None,
    images: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One group's outcome as a log line (the one place the format is written)."""
    row: dict[str, Any] = {"id": item_id, "step": int(step), "correct": int(correct), "k": int(k)}
    if solution is not None:
        row["solution"] = solution
    if images is not None:
        row["images"] = list(images)
    return row


def append_rollouts(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a rollout log (created with its folder if needed), flushed so a killed run keeps them."""
    rows = list(rows)
    if not rows:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()


def _check(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in ("id", "step", "correct", "k") if key not in obj]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    if not isinstance(obj["id"], str):
        raise ValueError(f"{where}: 'id' must be a string, got {obj['id']!r}")
    for key in ("step", "correct", "k"):
        if not isinstance(obj[key], int) or isinstance(obj[key], bool):
            raise ValueError(f"{where}: {key!r} must be an integer, got {obj[key]!r}")
    if obj["k"] < 1 or not 0 <= obj["correct"] <= obj["k"]:
        raise ValueError(f"{where}: need 0 <= correct <= k and k >= 1, got {obj['correct']} of {obj['k']}")
    return obj


def read_rollouts(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Observations of all logs in merge order (file order, then step); a last line cut by a kill is skipped,
    any other bad line is an error naming file and line."""
    out: list[dict[str, Any]] = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows: dict[tuple[str, int], dict[str, Any]] = {}  # (id, step) -> last line
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                if lineno == len(lines):
                    continue  # the line a kill cut short
                raise ValueError(f"{path}:{lineno}: malformed JSON (column {err.colno}): {err.msg}") from None
            row = _check(obj, f"{path}:{lineno}")
            rows.pop((row["id"], row["step"]), None)
            rows[(row["id"], row["step"])] = row
        out += sorted(rows.values(), key=lambda r: r["step"])  # stable: ties keep file order
    return out


def merge_rollouts(
    rows: Iterable[Mapping[str, Any]],
    mode: str = "latest",
    alpha: float = 0.5,
    base: Mapping[str, DifficultyRow] | None = None,
) -> dict[str, DifficultyRow]:
    """Observations (in merge order) -> one difficulty row per item (see the module docstring for the modes).

    Args:
        rows: rollout log rows, oldest first.
        mode: `latest` or `ema`.
        alpha: weight of a new observation in `ema` (0 < alpha <= 1; 1 equals `latest`).
        base: an existing difficulty file's rows: kept for items never observed, and `ema`'s starting value.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    merged: dict[str, DifficultyRow] = dict(base or {})
    rate: dict[str, float] = {i: row.pass_rate for i, row in merged.items()}
    for row in rows:
        item, k = row["id"], row["k"]
        observed = row["correct"] / k
        rate[item] = observed if mode == "latest" or item not in rate else alpha * observed + (1 - alpha) * rate[item]
        correct = row["correct"] if mode == "latest" else min(k, math.floor(rate[item] * k + 0.5))
        old = merged.get(item)
        solution = row.get("solution", old.solution if old else None)
        images = row.get("images", list(old.images) if old and old.images is not None else None)
        merged[item] = DifficultyRow(
            item, correct, k, correct / k, None, solution, tuple(images) if images is not None else None
        )
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="rollout logs (rollouts.jsonl of GRPO runs), oldest run first")
    parser.add_argument("--out", required=True, help="difficulty JSONL to write")
    parser.add_argument("--mode", choices=MODES, default="latest", help="latest observation, or an EMA of pass rates")
    parser.add_argument("--alpha", type=float, default=0.5, help="EMA weight of a new observation (mode ema)")
    parser.add_argument("--base", default=None, help="difficulty file to start from (items never rolled out keep it)")
    args = parser.parse_args(argv)
    base = read_difficulty(args.base) if args.base else None
    observations = read_rollouts(args.logs)
    merged = merge_rollouts(observations, args.mode, args.alpha, base)
    write_difficulty(args.out, merged)
    print(f"wrote {len(merged)} rows to {args.out} ({args.mode}): {tier_counts(merged)}")
    if base is not None:  # how the run moved the tiers of the file it started from
        rolled_out = {row["id"] for row in observations}
        print("Items rolled out, base tier -> merged tier:")
        print(format_transitions(tier_transitions(base, {i: merged[i] for i in rolled_out})))


if __name__ == "__main__":
    main()
