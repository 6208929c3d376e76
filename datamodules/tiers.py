"""Difficulty tiers and selections for DC-SFT (arXiv 2602.10815; official `infer/sample.py`), plus the ms-swift export helpers.

DC-SFT samples k = 8 answers per training prompt from the cold-started model, tiers each prompt by its number of
correct answers (easy k/k, medium 1..k-1, hard 0/k) and then runs plain SFT on a subset: SFT-M (medium) or SFT-EM
(easy + medium). Fig. 5 mixes a small share of hard items back into SFT-EM. A `variance` weighting draws a subset
with weight p(1-p) from each item's pass rate p (the items whose GRPO groups carry signal). Everything here is pure
and seeded (no model code), so a selection is reproducible from the difficulty file (`datamodules/difficulty_file.py`)
alone.
Tests: `python -m pytest tests/test_tiers.py -q`.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamodules.files import atomic_write_text

if TYPE_CHECKING:
    from datamodules.difficulty_file import DifficultyRow

TIERS = ("easy", "medium", "hard")
WEIGHTINGS = ("uniform", "variance")
PRESETS: dict[str, list[str] | None] = {
    "sft": None,  # all items: standard SFT
    "sft_m": ["medium"],  # SFT-M, the official quick-start variant
    "sft_em": ["easy", "medium"],  # SFT-EM, the paper's strongest variant (drop only hard)
    "sft_e": ["easy"],
    "sft_h": ["hard"],
}


def assign_tier(correct: int, k: int) -> str:
    """DC-SFT tiering (official `infer/sample.py`): all right → easy, all wrong → hard, anything in between → medium."""
    if k < 1 or not 0 <= correct <= k:
        raise ValueError(f"need 0 <= correct <= k and k >= 1, got correct={correct}, k={k}")
    if correct == k:
        return "easy"
    return "hard" if correct == 0 else "medium"


def tier_counts(difficulty: Mapping[str, DifficultyRow], ids: Iterable[str] | None = None) -> dict[str, int]:
    """Number of items per tier (over `ids` if given, else the whole file)."""
    counts = dict.fromkeys(TIERS, 0)
    for item_id in difficulty if ids is None else ids:
        counts[difficulty[item_id].tier] += 1
    return counts


def _preview(ids: list[str], n: int = 5) -> str:
    return ", ".join(repr(i) for i in ids[:n]) + (", ..." if len(ids) > n else "")


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


@dataclass
class Selection:
    """Which training items to keep, given a difficulty file (SFT-M / SFT-EM; the paper's Fig. 5 for `hard_share`)."""

    preset: str | None = None
    """`sft` (all items), `sft_m` (medium tier: SFT-M), `sft_em` (easy + medium: SFT-EM), `sft_e` or `sft_h`."""
    tiers: list[str] | None = None
    """Explicit tiers instead of a preset, e.g. `[easy, medium]`."""
    pass_rate_range: tuple[float, float] | None = None
    """Closed pass-rate interval `[lo, hi]` instead of tiers, e.g. `[0.125, 0.875]`."""
    hard_share: float = 0.0
    """Share of the final selection drawn from the hard tier (paper Fig. 5: 0.05)."""
    size: int | None = None
    """Keep a seeded random subset of this many items of the selection (the paper's Table 1 trains on equal-size
    easy / medium / hard subsets)."""
    seed: int = 0
    """Seed of the hard-share draw and of the `size` subset."""
    weighting: str = "uniform"
    """How the `size` subset is drawn: `uniform`, or `variance`: without replacement with weight p(1-p) +
    `uniform_mix` from each item's pass rate p, so the items whose groups carry the most GRPO signal come first
    (p(1-p) is the variance of a binary reward; items with p in {0, 1} are never drawn when the mix is 0)."""
    uniform_mix: float = 0.0
    """Added to every `variance` weight: a share of uniform draws that keeps easy and hard items reachable."""

    def problems(self) -> list[str]:
        """Invalid combinations, all at once (empty when valid)."""
        out = []
        given = [name for name in ("preset", "tiers", "pass_rate_range") if getattr(self, name) is not None]
        if len(given) > 1:
            out.append(f"selection: give one of preset, tiers or pass_rate_range, not {given}")
        if self.preset is not None and self.preset not in PRESETS:
            out.append(f"selection.preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if self.tiers is not None and [t for t in self.tiers if t not in TIERS]:
            out.append(f"selection.tiers {self.tiers} may only hold {list(TIERS)}")
        if self.pass_rate_range is not None:
            lo, hi = self.pass_rate_range
            if not 0.0 <= lo <= hi <= 1.0:
                out.append(f"selection.pass_rate_range must satisfy 0 <= lo <= hi <= 1, got {self.pass_rate_range}")
        if not 0.0 <= self.hard_share < 1.0:
            out.append(f"selection.hard_share must be in [0, 1), got {self.hard_share}")
        if self.size is not None and self.size < 1:
            out.append(f"selection.size must be >= 1 or null, got {self.size}")
        if self.weighting not in WEIGHTINGS:
            out.append(f"selection.weighting {self.weighting!r} is not one of {list(WEIGHTINGS)}")
        if self.weighting == "variance" and self.size is None:
            out.append("selection.weighting 'variance' draws a subset: give selection.size")
        if self.uniform_mix < 0:
            out.append(f"selection.uniform_mix must be >= 0, got {self.uniform_mix}")
        return out

    def keeps_all(self) -> bool:
        """True when no item is dropped (standard SFT)."""
        return (
            self.tiers is None
            and self.pass_rate_range is None
            and PRESETS.get(self.preset or "sft") is None
            and not self.hard_share
            and self.size is None
        )

    def describe(self) -> str:
        if self.pass_rate_range is not None:
            what = f"pass_rate in {list(self.pass_rate_range)}"
        elif self.tiers is not None:
            what = f"tiers {self.tiers}"
        else:
            what = self.preset or "sft"
        what += f" + hard_share {self.hard_share}" if self.hard_share else ""
        if self.weighting == "variance":
            what += f", variance-weighted (mix {self.uniform_mix})"
        return what + (f", {self.size} items" if self.size is not None else "")


def apply_selection(ids: list[str], difficulty: Mapping[str, DifficultyRow], selection: Selection) -> list[str]:
    """Ids kept by `selection`, in the order of `ids` (the one place a Selection is resolved)."""
    problems = selection.problems()
    if problems:
        raise ValueError("; ".join(problems))
    tiers = selection.tiers
    if tiers is None and selection.pass_rate_range is None:
        tiers = preset_tiers(selection.preset or "sft")
    rng = tuple(selection.pass_rate_range) if selection.pass_rate_range is not None else None
    kept = select(ids, difficulty, tiers, rng, selection.hard_share, selection.seed)
    if selection.size is None:
        return kept
    if selection.size > len(kept):
        raise ValueError(
            f"selection.size {selection.size} is larger than the {len(kept)} items of {selection.describe()}"
        )
    if selection.weighting == "variance":
        subset = set(
            weighted_sample(
                kept, variance_weights(kept, difficulty, selection.uniform_mix), selection.size, selection.seed
            )
        )
    else:
        subset = set(random.Random(selection.seed).sample(kept, selection.size))
    return [i for i in kept if i in subset]


def variance_weights(ids: list[str], difficulty: Mapping[str, DifficultyRow], uniform_mix: float = 0.0) -> list[float]:
    """p(1-p) + uniform_mix per item, p its pass rate: the variance of a binary reward, i.e. how much GRPO signal a
    group of the item is expected to carry."""
    return [difficulty[i].pass_rate * (1 - difficulty[i].pass_rate) + uniform_mix for i in ids]


def weighted_sample(ids: list[str], weights: list[float], size: int, seed: int) -> list[str]:
    """`size` ids drawn without replacement with probability proportional to weight (Efraimidis-Spirakis keys
    u^(1/w), seeded); zero-weight ids are never drawn, and asking for more than the positive-weight ids is an error."""
    rng = random.Random(seed)
    keyed = [(rng.random() ** (1.0 / w), i) for i, w in zip(ids, weights) if w > 0]
    if size > len(keyed):
        raise ValueError(f"selection.size {size} is larger than the {len(keyed)} items with a positive weight")
    return [i for _, i in sorted(keyed, reverse=True)[:size]]


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
