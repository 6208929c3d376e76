"""The GRPO-variants benchmark's arithmetic on hand-made step records (no model): per-step means, zero-advantage
shares over the groups drawn, ratios against plain GRPO, and the machine-readable last lines that README figures are
copied from. The benchmark itself (`python -m bench.grpo_variants`) takes minutes and is never run by the tests."""

from __future__ import annotations

import math

import pytest

from bench.grpo_variants import StepRecord, report_lines, summarize


def rec(seconds: float, drawn: int, kept: int, spread: int, correct: int, wrong: int, rounds: int = 0) -> StepRecord:
    return StepRecord(seconds, drawn * 8, drawn, kept, spread, correct, wrong, rounds)


RECORDS = {
    "grpo": [rec(10.0, 2, 2, 1, 1, 0), rec(12.0, 2, 2, 0, 1, 1)],
    "filtered": [rec(15.0, 4, 2, 2, 2, 0, rounds=1), rec(21.0, 6, 1, 1, 3, 2, rounds=2)],
    "grpo_m": [rec(11.0, 2, 2, 2, 0, 0), rec(11.0, 2, 2, 1, 0, 1)],
}


def test_summaries_and_ratios():
    s = summarize(RECORDS)
    assert s["grpo"].seconds == 11.0 and s["grpo"].median_seconds == 11.0 and s["grpo"].rollouts == 16.0
    assert s["grpo"].zero_share == pytest.approx(3 / 4) and s["grpo"].all_wrong_share == pytest.approx(1 / 4)
    assert s["filtered"].zero_share == pytest.approx(7 / 10) and s["filtered"].rounds == 1.5
    assert s["filtered"].ratios == pytest.approx({"rollouts": 2.5, "time": 18 / 11, "time_per_spread": (36 / 3) / 22})
    assert s["grpo_m"].ratios["time"] == pytest.approx(1.0) and s["grpo_m"].spread == 1.5


def test_no_group_with_spread_gives_nan_not_zero():
    s = summarize({"grpo": [rec(10.0, 2, 2, 0, 2, 0)], "grpo_m": [rec(10.0, 2, 2, 2, 0, 0)]})
    assert math.isinf(s["grpo"].seconds_per_spread) and math.isnan(s["grpo_m"].ratios["time_per_spread"])


def test_report_table_and_last_lines():
    lines = report_lines(summarize(RECORDS))
    assert lines[0].startswith("| variant |") and len(lines[2:5]) == 3 and lines[3].startswith("| filtered | 2 |")
    assert lines[-2:] == ["ratio_filtered_time: 1.636", "ratio_grpo_m_time: 1.000"]
    assert "zero_adv_share_grpo: 0.750" in lines and "ratio_filtered_rollouts: 2.500" in lines
