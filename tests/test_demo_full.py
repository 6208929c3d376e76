"""The `--full` demo report's live-difficulty costs, on hand-written run folders (no model)."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.demo_full import cost_markdown, run_cost, summarise


def _run(run_dir: Path, name: str) -> Path:
    predictions = run_dir / name / "version_0" / "predictions"
    predictions.mkdir(parents=True)
    metrics = predictions / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {"val/demo_id/acc": 60.0}}))
    return metrics


def test_grpo_cost_counts_completions_and_zero_advantage_groups(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "full/live_grpo_s1")
    rows = [{"id": "a", "step": 0, "correct": 8, "k": 8}, {"id": "b", "step": 0, "correct": 3, "k": 8}]
    rows.append({"id": "c", "step": 1, "correct": 0, "k": 8})
    (metrics.parent.parent / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    timings = [{"stage": "full/live_grpo_s1", "seconds": 90.0}, {"stage": "full/live_grpo_s1", "seconds": 100.0}]
    (tmp_path / "timings.jsonl").write_text("".join(json.dumps(t) + "\n" for t in timings))
    cost = run_cost(tmp_path, "full/live_grpo_s1", metrics)
    assert cost == {"wall_s": 100.0, "groups": 3, "completions": 24, "zero_adv": 200 / 3}  # the latest timing


def test_refresh_cost_and_seed_42_without_timing(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "sft_m_refresh")
    refresh = metrics.parent.parent / "difficulty_refresh"
    refresh.mkdir()
    for n, seconds in ((1, 5.0), (2, 7.0)):
        info = {"measured": 10, "sampling": {"k": 8}, "metrics": {"refresh/seconds": seconds}}
        (refresh / f"refresh_{n}.json").write_text(json.dumps(info))
    (tmp_path / "timings.jsonl").write_text(json.dumps({"stage": "sft_m_refresh", "seconds": 1.0}) + "\n")
    # the main run's folder: its time was measured elsewhere (another machine state), so no wall time
    assert run_cost(tmp_path, "sft_m_refresh", metrics) == {"completions": 160, "refresh_s": 12.0}
    assert run_cost(tmp_path, "missing", None) == {}


def test_cost_table_means_over_the_seeds_that_have_a_figure() -> None:
    costs = {"GRPO": [{"completions": 800, "zero_adv": 50.0}, {"wall_s": 100.0, "completions": 820, "zero_adv": 60.0}]}
    text = cost_markdown(costs)
    row = next(line for line in text.splitlines() if line.startswith("| GRPO"))
    assert row == "| GRPO | 100 ± 0 (1) | 810 ± 14 (2) | – | 55 ± 7 (2) | – |"


def test_summary_adds_the_ood_average() -> None:
    runs = {"x": [{"demo_id": 70.0, "demo_ood_sketch": 60.0, "demo_ood_texture": 64.0}]}
    summary = summarise(runs)
    assert summary["x"]["ood_avg"] == (62.0, 0.0, 1)
