"""Label noise (demo issue, point 4): seeded, the same items and answers in every file format, reported per tier."""

from __future__ import annotations

import pytest

from assets.test_data import write_color_data
from datamodules.difficulty_file import DifficultyRow, write_difficulty
from datamodules.formats import read_samples
from datamodules.noise import LabelNoise, noisy_answers, with_answers
from datamodules.tier_report import format_tier_report
from datamodules.tiers import Selection
from datamodules.vlm_data import VLMDataModule

GROUPS = [["red", "green", "blue", "yellow"], ["circle", "triangle"]]


def test_noisy_answers_are_seeded_in_group_and_format_independent(tmp_path):
    messages = read_samples(str(write_color_data(tmp_path / "d", n=20)))
    problems = read_samples(str(write_color_data(tmp_path / "d", n=20, fmt="problem")))
    noise = LabelNoise(share=0.25, seed=3, groups=GROUPS)
    chosen = noisy_answers(messages, noise)
    assert len(chosen) == 5
    assert noisy_answers(problems, noise) == chosen  # same items, same wrong answers in both official formats
    assert all(new != truth and new in GROUPS[0] for truth, new in chosen.values() if truth in GROUPS[0])
    assert set(noisy_answers(messages, LabelNoise(share=0.25, seed=4, groups=GROUPS))) != set(chosen)
    assert noisy_answers(messages, LabelNoise()) == {}
    replaced = {s.id: s for s in with_answers(messages, chosen)}
    for item_id, (_, new) in chosen.items():
        assert replaced[item_id].solution == new and replaced[item_id].messages[-1]["content"] == new
    untouched = next(s for s in messages if s.id not in chosen)
    assert replaced[untouched.id] == untouched


def test_datamodule_applies_noise_and_reports_it_per_tier(tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=10)
    noise = LabelNoise(share=0.2, seed=0)
    noisy = noisy_answers(read_samples(str(data)), noise)
    # a difficulty file where exactly one noisy item and one clean item are hard
    hard = [sorted(noisy)[0], next(str(i) for i in range(10) if str(i) not in noisy)]
    rows = [DifficultyRow(str(i), 0, 8, 0.0) if str(i) in hard else DifficultyRow(str(i), 4, 8, 0.5) for i in range(10)]
    write_difficulty(tmp_path / "diff.jsonl", rows)
    dm = VLMDataModule(
        tiny_model,
        train_file=str(data),
        difficulty_file=str(tmp_path / "diff.jsonl"),
        selection=Selection(preset="sft_em"),
        label_noise=noise,
    )
    dm.setup("fit")
    assert dm.noisy == noisy and len(dm.train_samples) == 8
    report = dm.report["tier_report"]["noise"]
    assert report == {
        "noisy": 2,
        "per_tier": {"easy": 0, "medium": 1, "hard": 1},
        "hard_precision": 0.5,
        "hard_recall": 0.5,
    }
    assert "the hard tier catches 50 % of them" in format_tier_report(dm.report["tier_report"], use_rich=False)


def test_bad_share_is_named_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match=r"label_noise.share must be in \[0, 1\)"):
        VLMDataModule("unused", train_file="x.json", label_noise=LabelNoise(share=1.5))
