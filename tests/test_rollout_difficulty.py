"""Rollout-derived difficulty: GRPO rollout logs merged into a difficulty file whose tiers match a hand computation."""

from __future__ import annotations

import json

import pytest

from datamodules.difficulty_file import DifficultyRow, read_difficulty, write_difficulty
from datamodules.rollout_difficulty import append_rollouts, main, merge_rollouts, read_rollouts, rollout_row
from datamodules.tier_report import tier_transitions
from datamodules.tiers import Selection, apply_selection

# (id, step, correct of 8), oldest first; hand computation of both modes (EMA alpha 0.5, halves round up):
#   a: 8, 3        latest 3 -> medium;  EMA 1 -> 0.6875 -> 5.5 -> 6 -> medium
#   b: 0           latest 0 -> hard;    EMA 0 -> hard
#   c: 4, 8        latest 8 -> easy;    EMA 0.5 -> 0.75 -> 6 -> medium
#   d: 7, 8, 8     latest 8 -> easy;    EMA 0.875 -> 0.9375 -> 0.96875 -> 7.75 -> 8 -> easy
#   e: 1, 0        latest 0 -> hard;    EMA 0.125 -> 0.0625 -> 0.5 -> 1 -> medium
LOG = [("a", 0, 8), ("b", 1, 0), ("c", 2, 4), ("d", 2, 7), ("e", 3, 1), ("c", 3, 8), ("d", 4, 8), ("a", 5, 3)]
LOG_2 = [("d", 6, 8), ("e", 7, 0)]


def _write_logs(tmp_path):
    first, second = tmp_path / "run1" / "rollouts.jsonl", tmp_path / "run2" / "rollouts.jsonl"
    append_rollouts(first, [rollout_row(i, s, c, 8, solution=f"gold {i}", images=[f"{i}.png"]) for i, s, c in LOG])
    append_rollouts(second, [rollout_row(i, s, c, 8) for i, s, c in LOG_2])
    return [first, second]


@pytest.mark.parametrize(
    "mode,correct,tiers",
    [
        ("latest", [3, 0, 8, 8, 0], ["medium", "hard", "easy", "easy", "hard"]),
        ("ema", [6, 0, 6, 8, 1], ["medium", "hard", "medium", "easy", "medium"]),
    ],
)
def test_merged_file_gives_the_hand_computed_tiers(tmp_path, capsys, mode, correct, tiers):
    out = tmp_path / "difficulty.jsonl"
    main([*map(str, _write_logs(tmp_path)), "--out", str(out), "--mode", mode, "--alpha", "0.5"])
    rows = read_difficulty(out)  # the file the datamodule and export_tiers read
    assert list(rows) == ["a", "b", "c", "d", "e"]
    assert [rows[i].correct for i in rows] == correct and [rows[i].tier for i in rows] == tiers
    assert all(r.k == 8 and r.pass_rate == r.correct / 8 for r in rows.values())
    assert rows["a"].solution == "gold a" and rows["a"].images == ("a.png",)  # identity kept for check_items
    medium = [i for i, t in zip(rows, tiers) if t == "medium"]
    assert apply_selection(list(rows), rows, Selection(tiers=["medium"])) == medium
    assert f"wrote 5 rows to {out} ({mode})" in capsys.readouterr().out


def test_log_order_resumed_steps_and_a_cut_last_line(tmp_path):
    log = tmp_path / "rollouts.jsonl"
    append_rollouts(log, [rollout_row("x", 3, 1, 4), rollout_row("x", 1, 4, 4), rollout_row("x", 3, 2, 4)])
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"id": "x", "step": 9, "corr')  # a kill mid-line
    rows = read_rollouts([log])
    assert [(r["step"], r["correct"]) for r in rows] == [(1, 4), (3, 2)]  # by step; a repeated step counts once
    assert merge_rollouts(rows)["x"].correct == 2


def test_tier_moves_from_the_base_file_to_the_merged_one(tmp_path, capsys):
    # base: a hard, b medium, c easy, d medium, z medium (never rolled out); latest of the logs: a medium (3),
    # b hard (0), c easy (8), d easy (8), e hard (0, not in the base): moves hard->medium, medium->hard, medium->easy
    base = {i: DifficultyRow(i, c, 8, c / 8) for i, c in (("a", 0), ("b", 4), ("c", 8), ("d", 2), ("z", 5))}
    moves = tier_transitions(base, merge_rollouts(read_rollouts(_write_logs(tmp_path)), base=base))
    assert moves["items"] == 5 and moves["changed"] == 3
    assert moves["counts"]["hard"] == {"easy": 0, "medium": 1, "hard": 0}
    assert moves["counts"]["medium"] == {"easy": 1, "medium": 1, "hard": 1}
    assert moves["counts"]["easy"] == {"easy": 1, "medium": 0, "hard": 0}
    write_difficulty(tmp_path / "base.jsonl", base)
    main(
        [
            *map(str, _write_logs(tmp_path / "again")),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--base",
            str(tmp_path / "base.jsonl"),
        ]
    )
    assert "Tier moves over 4 items (3 changed, 75.0 %)" in capsys.readouterr().out  # rolled out: z is not


def test_base_file_keeps_unseen_items_and_starts_the_average(tmp_path):
    base = {"a": DifficultyRow("a", 0, 8, 0.0), "z": DifficultyRow("z", 4, 8, 0.5, solution="gold z")}
    rows = [rollout_row("a", 0, 8, 8)]
    assert merge_rollouts(rows, "ema", 0.5, base)["a"].correct == 4  # 0.5 * 1 + 0.5 * 0
    merged = merge_rollouts(rows, "latest", base=base)
    assert merged["a"].correct == 8 and merged["z"] == base["z"]
    write_difficulty(tmp_path / "base.jsonl", base)
    append_rollouts(tmp_path / "r.jsonl", rows)
    main([str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--base", str(tmp_path / "base.jsonl")])
    assert set(read_difficulty(tmp_path / "o.jsonl")) == {"a", "z"}


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": "a", "step": 0, "k": 8}', "missing key"),
        ('{"id": "a", "step": 0, "correct": 9, "k": 8}', "0 <= correct <= k"),
        ('{"id": 1, "step": 0, "correct": 1, "k": 8}', "'id' must be a string"),
        ("not json", "malformed JSON"),
    ],
)
def test_bad_log_lines_name_file_and_line(tmp_path, line, message):
    log = tmp_path / "rollouts.jsonl"
    log.write_text(line + "\n" + json.dumps(rollout_row("b", 1, 1, 8)) + "\n")
    with pytest.raises(ValueError, match=message) as err:
        read_rollouts([log])
    assert f"{log}:1" in str(err.value)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="mode"):
        merge_rollouts([], mode="mean")
    with pytest.raises(ValueError, match="alpha"):
        merge_rollouts([], mode="ema", alpha=0.0)
