"""Tests for datamodules/tiers.py and datamodules/tier_report.py on hand-made pass counts (pure, seeded, < 1 s).

Run: `python -m pytest tests/test_tiers.py -q`
"""

from __future__ import annotations

import json
import os

import pytest

from datamodules import files as files_mod
from datamodules.difficulty_file import DifficultyRow, check_matches, read_difficulty, write_difficulty
from datamodules.tier_report import format_tier_report, save_tier_report, tier_report
from datamodules.tiers import (
    PRESETS,
    TIERS,
    assign_tier,
    export_messages_json,
    preset_tiers,
    records_to_messages,
    select,
)


def make(correct: dict[str, int], k: int = 8, solutions: dict[str, str] | None = None) -> dict[str, DifficultyRow]:
    """{id: correct} → {id: DifficultyRow} with pass_rate = correct / k."""
    sol = solutions or {}
    return {i: DifficultyRow(i, c, k, c / k, solution=sol.get(i)) for i, c in correct.items()}


# 7 items, k = 8: easy = 8/8, hard = 0/8, the rest medium.
SMALL = {"e1": 8, "m1": 3, "h1": 0, "e2": 8, "m2": 7, "h2": 0, "m3": 1}
SMALL_IDS = list(SMALL)


# ---------------------------------------------------------------- tier assignment
@pytest.mark.parametrize(
    ("correct", "k", "tier"),
    [(0, 8, "hard"), (1, 8, "medium"), (7, 8, "medium"), (8, 8, "easy"), (0, 1, "hard"), (1, 1, "easy")],
)
def test_assign_tier(correct, k, tier):
    assert assign_tier(correct, k) == tier


@pytest.mark.parametrize(("correct", "k"), [(9, 8), (-1, 8), (0, 0)])
def test_assign_tier_refuses_impossible_counts(correct, k):
    with pytest.raises(ValueError, match="correct"):
        assign_tier(correct, k)


def test_tiers_and_presets():
    assert TIERS == ("easy", "medium", "hard")
    assert PRESETS == {
        "sft": None,
        "sft_m": ["medium"],
        "sft_em": ["easy", "medium"],
        "sft_e": ["easy"],
        "sft_h": ["hard"],
    }
    assert preset_tiers("sft_em") == ["easy", "medium"]
    with pytest.raises(ValueError, match="valid presets"):
        preset_tiers("sft_x")


# ---------------------------------------------------------------- selection
def test_select_presets_exact_ids_in_original_order():
    d = make(SMALL)
    assert select(SMALL_IDS, d, tiers=preset_tiers("sft_m")) == ["m1", "m2", "m3"]
    assert select(SMALL_IDS, d, tiers=preset_tiers("sft_em")) == ["e1", "m1", "e2", "m2", "m3"]
    assert select(SMALL_IDS, d, tiers=preset_tiers("sft_h")) == ["h1", "h2"]
    assert select(SMALL_IDS, d, tiers=preset_tiers("sft")) == SMALL_IDS
    assert select(SMALL_IDS, d) == SMALL_IDS
    # order follows `ids`, not the tier list or the difficulty dict
    assert select(SMALL_IDS[::-1], d, tiers=["medium", "easy"]) == ["m3", "m2", "e2", "m1", "e1"]


def test_select_pass_rate_interval_is_closed():
    d = make(SMALL)
    # pass rates: m3 1/8 = 0.125, m1 3/8 = 0.375, m2 7/8 = 0.875; both ends included
    assert select(SMALL_IDS, d, pass_rate_range=(0.125, 0.375)) == ["m1", "m3"]
    assert select(SMALL_IDS, d, pass_rate_range=(0.375, 0.375)) == ["m1"]
    assert select(SMALL_IDS, d, pass_rate_range=(0.0, 0.0)) == ["h1", "h2"]
    with pytest.raises(ValueError, match="lo <= hi"):
        select(SMALL_IDS, d, pass_rate_range=(0.5, 0.25))


def test_select_refuses_bad_arguments():
    d = make(SMALL)
    with pytest.raises(ValueError, match=r"valid tiers: \['easy', 'medium', 'hard'\]"):
        select(SMALL_IDS, d, tiers=["middle"])
    with pytest.raises(ValueError, match="not both"):
        select(SMALL_IDS, d, tiers=["easy"], pass_rate_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="no difficulty row"):
        select([*SMALL_IDS, "zz"], d)


def test_empty_selection_refused_with_tier_counts():
    d = make({"a": 8, "b": 4})  # no hard items
    with pytest.raises(ValueError, match=r"tiers=\['hard'\] is empty.*'easy': 1, 'medium': 1, 'hard': 0"):
        select(["a", "b"], d, tiers=["hard"])
    with pytest.raises(ValueError, match=r"pass_rate in \[0.1, 0.2\] is empty"):
        select(["a", "b"], d, pass_rate_range=(0.1, 0.2))


HARD_MIX = {**{f"m{i:02d}": 4 for i in range(19)}, **{f"h{i}": 0 for i in range(10)}}
# interleave so that "order preserved" is a real check
HARD_MIX_IDS = [i for pair in zip([f"m{j:02d}" for j in range(10)], [f"h{j}" for j in range(10)]) for i in pair] + [
    f"m{j:02d}" for j in range(10, 19)
]


def test_hard_share_exact_count_and_seeding():
    d = make(HARD_MIX)
    # 19 medium base items; n_hard = round(0.05 * 19 / 0.95) = round(1.0) = 1 → 20 items, 1/20 = 5 % hard
    out = select(HARD_MIX_IDS, d, tiers=["medium"], hard_share=0.05, seed=0)
    hard = [i for i in out if i.startswith("h")]
    assert len(out) == 20 and len(hard) == 1
    assert out == [i for i in HARD_MIX_IDS if i in set(out)]  # original order
    assert select(HARD_MIX_IDS, d, tiers=["medium"], hard_share=0.05, seed=0) == out  # same seed, same ids
    drawn = {tuple(select(HARD_MIX_IDS, d, tiers=["medium"], hard_share=0.05, seed=s)) for s in range(10)}
    assert len(drawn) > 1  # different seeds draw different hard items (10-item pool)
    # 0.2 share over 8 base items: round(0.2 * 8 / 0.8) = 2 hard → 2 / 10 = 20 %
    eight = [f"m{j:02d}" for j in range(8)]
    out = select(eight + [f"h{j}" for j in range(10)], d, pass_rate_range=(0.5, 0.5), hard_share=0.2, seed=3)
    assert len(out) == 10 and sum(i.startswith("h") for i in out) == 2


def test_hard_share_refused_when_pool_too_small():
    d = make(HARD_MIX)
    # 0.5 share over 19 base items needs round(0.5 * 19 / 0.5) = 19 hard, only 10 exist
    with pytest.raises(ValueError, match="needs 19 extra hard items, but only 10"):
        select(HARD_MIX_IDS, d, tiers=["medium"], hard_share=0.5)
    # the hard items are already selected: none left to mix in
    with pytest.raises(ValueError, match="only 0 hard items"):
        select(HARD_MIX_IDS, d, tiers=["medium", "hard"], hard_share=0.05)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        select(HARD_MIX_IDS, d, hard_share=1.0)


def test_hard_share_rounding_to_zero_warns():
    d = make(SMALL)
    # 3 medium items: round(0.05 * 3 / 0.95) = round(0.158) = 0 hard
    with pytest.warns(UserWarning, match="rounds to 0"):
        assert select(SMALL_IDS, d, tiers=["medium"], hard_share=0.05) == ["m1", "m2", "m3"]


# ---------------------------------------------------------------- matching the training file
def test_check_matches_accepts_matching_file():
    check_matches(SMALL_IDS, make(SMALL), "train.json", "diff.jsonl", k=8)


@pytest.mark.parametrize(
    ("train_ids", "difficulty", "k", "expected"),
    [
        ([*SMALL_IDS, "new"], make(SMALL), None, r"1 training id\(s\) missing.*'new'"),
        (SMALL_IDS[1:], make(SMALL), None, r"1 id\(s\) in the difficulty file are not in the training file \('e1'\)"),
        (SMALL_IDS, make(SMALL), 4, r"k = \[8\] in the difficulty file but the config expects k = 4"),
        (["a", "b"], {**make({"a": 1}, k=8), **make({"b": 1}, k=4)}, None, r"mixed k values \[4, 8\]"),
    ],
)
def test_check_matches_refuses_mismatch(train_ids, difficulty, k, expected):
    with pytest.raises(ValueError, match=expected) as info:
        check_matches(train_ids, difficulty, "data/train.json", "runs/diff.jsonl", k=k)
    msg = str(info.value)
    assert (
        "data/train.json" in msg
        and "runs/diff.jsonl" in msg
        and "python scripts/runs.py <experiment>/difficulty" in msg
    )


# ---------------------------------------------------------------- difficulty file I/O
def test_write_read_round_trip_and_atomic(tmp_path):
    rows = make(SMALL, solutions={"e1": "goose"})
    rows["m1"] = DifficultyRow("m1", 3, 8, 0.375, answers=("goose", "duck", "goose"), solution="goose")
    path = tmp_path / "diff.jsonl"
    write_difficulty(path, rows)
    assert os.listdir(tmp_path) == ["diff.jsonl"]  # no temp file left behind
    assert read_difficulty(path) == rows
    assert json.loads(path.read_text().splitlines()[0]) == {
        "id": "e1",
        "correct": 8,
        "k": 8,
        "pass_rate": 1.0,
        "solution": "goose",
    }


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "diff.jsonl"
    write_difficulty(path, make({"a": 1}))
    before = path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_difficulty(path, make({"b": 2}))
    assert path.read_text() == before and os.listdir(tmp_path) == ["diff.jsonl"]


GOOD = '{"id": "a", "correct": 1, "k": 8, "pass_rate": 0.125}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "b", "correct": 1, "k": 8,', "malformed JSON"),
        ('{"id": "b", "correct": 1, "k": 8}', r"missing key\(s\) \['pass_rate'\]"),
        ('{"id": "b", "correct": 9, "k": 8, "pass_rate": 1.125}', "'correct' must be in 0..k"),
        ('{"id": "b", "correct": 2, "k": 8, "pass_rate": 0.5}', "'pass_rate' 0.5 != correct / k = 0.25"),
        ('{"id": "b", "correct": "2", "k": 8, "pass_rate": 0.25}', "'correct' must be an integer"),
        ('["b", 1, 8]', "expected a JSON object"),
        (GOOD, "duplicate id 'a' \\(first seen on line 1\\)"),
    ],
)
def test_read_difficulty_reports_file_and_line(tmp_path, line, expected):
    path = tmp_path / "diff.jsonl"
    path.write_text(f"{GOOD}\n\n{line}\n")  # line 2 is blank (skipped), the bad row is line 3
    with pytest.raises(ValueError, match=expected) as info:
        read_difficulty(path)
    assert str(info.value).startswith(f"{path}:3: ")


# ---------------------------------------------------------------- tier report
# k = 4, 10 items. cat: 0,0,4,2 | dog: 0,4,3 | fox: 0 | owl: 4,1
REPORT_COUNTS = {"c1": 0, "c2": 0, "c3": 4, "c4": 2, "d1": 0, "d2": 4, "d3": 3, "f1": 0, "o1": 4, "o2": 1}
REPORT_LABELS = {i: {"c": "cat", "d": "dog", "f": "fox", "o": "owl"}[i[0]] for i in REPORT_COUNTS}


def test_tier_report_counts_histogram_and_hard_labels():
    report = tier_report(make(REPORT_COUNTS, k=4, solutions=REPORT_LABELS))
    # hard (0/4): c1 c2 d1 f1 = 4; easy (4/4): c3 d2 o1 = 3; medium: c4 d3 o2 = 3
    assert report["n"] == 10 and report["k"] == 4
    assert report["tiers"] == {
        "easy": {"count": 3, "share": 0.3},
        "medium": {"count": 3, "share": 0.3},
        "hard": {"count": 4, "share": 0.4},
    }
    # correct = 0: 4 items, 1: o2, 2: c4, 3: d3, 4: c3 d2 o1
    assert report["histogram"] == {"bins": ["0/4", "1/4", "2/4", "3/4", "4/4"], "counts": [4, 1, 1, 1, 3]}
    assert report["overall_hard_share"] == pytest.approx(0.4)
    # cat 2/4 = 0.5 → lift 0.5/0.4 = 1.25; fox 1/1 → lift 2.5; dog 1/3 → lift 0.833; owl has no hard item.
    # Sorted by hard count (cat 2 first), then lift (fox 2.5 before dog 0.833).
    got = [(e["label"], e["hard"], e["total"], e["hard_share"], e["lift"]) for e in report["hard_labels"]]
    assert got == [
        ("cat", 2, 4, 0.5, pytest.approx(1.25)),
        ("fox", 1, 1, 1.0, pytest.approx(2.5)),
        ("dog", 1, 3, pytest.approx(1 / 3), pytest.approx(5 / 6)),
    ]
    assert [e["label"] for e in tier_report(make(REPORT_COUNTS, k=4), REPORT_LABELS, top=2)["hard_labels"]] == [
        "cat",
        "fox",
    ]


def test_tier_report_pass_rate_bins_and_mixed_k():
    d = make(REPORT_COUNTS, k=4)
    # pass rates 0 ×4, .25 → [0, .5) = 5; .5, .75, 1 ×3 → [.5, 1] = 5
    assert tier_report(d, bins=2)["histogram"] == {"bins": ["[0.00, 0.50)", "[0.50, 1.00]"], "counts": [5, 5]}
    assert tier_report(d)["hard_labels"] == []  # no labels, no solutions
    with pytest.raises(ValueError, match="mixed k"):
        tier_report({**d, **make({"x": 1}, k=8)})


@pytest.mark.parametrize("use_rich", [True, False])
def test_format_and_save_tier_report(tmp_path, use_rich):
    report = tier_report(make(REPORT_COUNTS, k=4), REPORT_LABELS)
    text = format_tier_report(report, use_rich=use_rich)
    for needle in ("10 items", "medium", "40.0%", "4/4", "cat", "1.25", "2.50"):
        assert needle in text
    save_tier_report(report, tmp_path / "tiers.json")
    assert json.loads((tmp_path / "tiers.json").read_text()) == report
    assert os.listdir(tmp_path) == ["tiers.json"]


# ---------------------------------------------------------------- ms-swift export
def test_records_to_messages_and_export_match_official_schema(tmp_path):
    problems = [
        {
            "problem": "Please provide the object name in the image. Output the answer using one word.",
            "solution": "screw",
            "image": "/data/train/n04153751/n04153751_13386.JPEG",
        },
        {"problem": "Name it.", "solution": "jack-o'-lantern ☺", "image": "b.png"},
    ]
    rows = records_to_messages(problems)
    assert rows[0] == {  # exactly one row of the official imagenet_*_sft.json (infer/sample.py)
        "messages": [
            {
                "role": "user",
                "content": "<image>Please provide the object name in the image. Output the answer using one word.",
            },
            {"role": "assistant", "content": "screw"},
        ],
        "images": ["/data/train/n04153751/n04153751_13386.JPEG"],
    }
    path = tmp_path / "sft_m.json"
    export_messages_json(rows, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('[\n  {\n    "messages": [') and "☺" in text  # indent 2, non-ASCII kept
    loaded = json.loads(text)
    assert loaded == rows and list(loaded[1]) == ["messages", "images"]
    assert os.listdir(tmp_path) == ["sft_m.json"]
    with pytest.raises(ValueError, match=r"row 0: missing key\(s\) \['image'\]"):
        records_to_messages([{"problem": "p", "solution": "s"}])
    with pytest.raises(ValueError, match="row 1: expected a dict with a 'messages' list"):
        export_messages_json([rows[0], {"images": []}], path)
