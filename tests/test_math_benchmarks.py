"""Math readers on small files in the official layouts: prompts, multiple-choice filters with their counts, scoring,
WeMath's four-dimensional scores and step accuracies through the evaluation summary, a clear error on a wrong layout,
and the Table 6 report on fake run folders."""

from __future__ import annotations

import json
import random
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from callbacks.generative_eval import summarize
from datamodules.benchmarks.math_benchmarks import MMK12, MathVerse, MathVision, WeMath, inline_choices

RNG = random.Random(0)


def image_cell() -> dict:
    buffer = BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": "x.png"}


def test_mathvision_parquet_mc_filter_prompt_and_score(tmp_path):
    rows = {
        "id": ["1", "2", "3"],
        "question": ["<image1> Which?", "<image1> How many?", "<image1> Pick"],
        "options": [["A", "B", "C", "D", "E"], [], ["10", "20", "30", "40", "50"]],
        "answer": ["C", "7", "B"],
        "subject": ["metric geometry - angle", "counting", "metric geometry - length"],
        "level": [2, 1, 3],
        "decoded_image": [image_cell()] * 3,
    }
    pq.write_table(pa.table(rows), tmp_path / "test.parquet")
    items = MathVision(str(tmp_path / "test.parquet")).load()
    assert len(items) == 3 and [i.meta["mc"] for i in items] == [True, False, True]
    mc = MathVision(str(tmp_path / "test.parquet"), mc_only=True)
    mc_items = mc.load()
    assert [i.id for i in mc_items] == ["1", "3"]
    assert mc_items[0].prompt.endswith("<image1> Which?\n")  # letters-only options are not listed
    assert mc_items[1].prompt.endswith("(A) 10\n(B) 20\n(C) 30\n(D) 40\n(E) 50")
    assert mc.max_new_tokens == 4096
    assert mc.score(mc_items[1], "so the length is \\boxed{20}", RNG).correct  # the option's text counts
    assert mc.score(mc_items[0], "The answer is \\boxed{C}", RNG).correct
    assert not mc.score(mc_items[0], "I think it is A or B", RNG).correct


def test_mathverse_versions_mc_and_rule_based_score(tmp_path):
    rows = []
    for index, version in enumerate(["Text Dominant", "Vision Only"]):
        question = "Find x.\nChoices:\nA:30\nB:45\nC:60\nD:90"
        for kind, answer in (("multi-choice", "(B)"), ("free-form", "12")):
            rows.append(
                {
                    "sample_index": f"{index}-{kind}",
                    "problem_version": version,
                    "question": question,
                    "answer": answer,
                    "question_type": kind,
                    "query_cot": "Please first conduct reasoning... " + question,
                    "query_wo": question,
                    "image": None,
                    "metadata": {"subject": "plane geometry"},
                }
            )
    (tmp_path / "testmini.json").write_text(json.dumps(rows))
    bench = MathVerse(str(tmp_path / "testmini.json"), versions=["Vision Only"], mc_only=True)
    items = bench.load()
    assert len(items) == 1 and items[0].gold == "B" and items[0].prompt.startswith("Please first conduct")
    assert bench.score(items[0], "... so the answer is \\boxed{B}", RNG).correct
    undecided = bench.score(items[0], "A and B are both possible", RNG)
    assert not undecided.correct and undecided.fallback  # counted, not guessed
    free = MathVerse(str(tmp_path / "testmini.json")).load()
    assert len(free) == 4
    with pytest.raises(ValueError, match="versions must be among"):
        MathVerse(str(tmp_path / "testmini.json"), versions=["Vision only"])


def test_wemath_rows_and_four_dimensional_scores(tmp_path):
    rows = []
    for problem in ("2steps_1", "2steps_2"):
        for key in ("2steps_1", "2steps_2", "2steps_multi"):
            rows.append(
                {
                    "ID": problem,
                    "key": key,
                    "question": "Q",
                    "option": "A. 1;B. 2;C. 3;D. 4;E. No correct answer",
                    "answer": "B",
                    "image_path": None,
                    "knowledge concept": "angles",
                }
            )
    (tmp_path / "testmini.json").write_text(json.dumps(rows))
    bench = WeMath(str(tmp_path / "testmini.json"))
    items = bench.load()
    assert len(items) == 6 and "<Thought process>" in items[0].prompt and "Option: A. 1;B. 2" in items[0].prompt
    answers = ["<Answer>: <<B>>"] * 3 + ["<Answer>: <<B>>", "<Answer>: <<C>>", "<Answer>: <<B>>"]
    results = [{"correct": bench.score(i, a, RNG).correct, "fallback": False} for i, a in zip(items, answers)]
    metrics = summarize(bench, items, results)
    assert metrics["val/wemath/acc"] == pytest.approx(100 * 5 / 6, abs=0.01)
    # problem 1: all right (CM); problem 2: a sub-question wrong, multi right (RM strict)
    assert metrics["val/wemath/score_strict"] == pytest.approx(100 * (525 - 1) / 525)
    # step accuracies: sub-questions 3 of 4 right (S1), both two-step problems right (S2), no three-step problem
    assert metrics["val/wemath/s1_acc"] == pytest.approx(75.0) and metrics["val/wemath/s2_acc"] == 100.0
    assert "val/wemath/s3_acc" not in metrics


def test_mmk12_inline_choices_and_subjects(tmp_path):
    question = "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6"
    rows = {
        "id": ["m1", "p1"],
        "subject": ["math", "physics"],
        "image": [image_cell()] * 2,
        "question": [question, question],
        "answer": ["B", "B"],
    }
    pq.write_table(pa.table(rows), tmp_path / "test.parquet")
    bench = MMK12(str(tmp_path / "test.parquet"), subjects=["math"])
    items = bench.load()
    assert [i.id for i in items] == ["m1"] and inline_choices(question) == {"A": "3", "B": "4", "C": "5", "D": "6"}
    assert bench.score(items[0], "2 + 2 = 4, so \\boxed{B}", RNG).correct
    assert bench.score(items[0], "The answer is 4", RNG).correct  # option text, VLMEvalKit's can_infer
    with pytest.raises(ValueError, match=r"lacks columns \['subject'"):
        pq.write_table(pa.table({"id": ["x"], "question": ["q"]}), tmp_path / "bad.parquet")
        MMK12(str(tmp_path / "bad.parquet")).load()


def test_mmk12_converter_keeps_verified_responses(tmp_path):
    from datamodules.formats import read_samples
    from datamodules.math_data import read_responses, write_math_files

    rows = [
        {"id": "a", "question": "2+2=?", "answer": "4", "image": image_cell()["bytes"]},
        {"id": "b", "question": "Pick.\nA. 3\nB. 4", "answer": "B", "image": image_cell()["bytes"]},
        {"id": "c", "question": "3*3=?", "answer": "9", "image": image_cell()["bytes"]},
        {"id": "d", "question": "1+1=?", "answer": "2", "image": image_cell()["bytes"]},
    ]
    lines = [
        {"id": "a", "response": "2+2 is \\boxed{5}"},  # wrong first, then right: the verified one is kept
        {"id": "a", "response": "so \\boxed{4}"},
        {"id": "b", "response": "It is 4, the answer is \\boxed{B}"},
        {"id": "c", "response": "\\boxed{6}"},  # never verified: dropped
        {"id": "d", "response": "the answer is 2"},
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    counts = write_math_files(rows, read_responses(tmp_path / "r.jsonl"), tmp_path / "out", cold_start=1, seed=0)
    expected = {"records": 4, "without_image": 0, "with_responses": 4, "verified": 3}
    assert counts == expected | {"cold_sft": 1, "left_sft": 2, "left_grpo": 2}
    sft = read_samples(str(tmp_path / "out" / "mmk12_left_sft.json"))
    grpo = read_samples(str(tmp_path / "out" / "mmk12_left_grpo.json"))
    assert [s.images for s in sft] == [s.images for s in grpo] and all("\\boxed{6}" not in s.solution for s in sft)
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 1"):
        read_responses(tmp_path / "bad.jsonl")


def test_short_math_grpo_fit_with_math_and_format_rewards(trained_tiny_model, tmp_path):
    """GRPO runs on math prompts with the verified-answer reward plus the format reward (the paper's math GRPO)."""
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.grpo import GRPOConfig, GRPOModule
    from lightning_modules.sampling import SamplingConfig
    from lightning_modules.training import OptimConfig
    from lightning_modules.vlm import LoraOptions, VLMOptions
    from tests.helpers import cpu_trainer

    Image.new("RGB", (56, 56), (9, 9, 9)).save(tmp_path / "x.png")
    rows = [{"problem": f"What is {i} + {i}?", "solution": str(2 * i), "image": "x.png"} for i in range(4)]
    (tmp_path / "math.json").write_text(json.dumps(rows))
    module = GRPOModule(
        trained_tiny_model,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0)),
        sampling=SamplingConfig(k=2, max_new_tokens=4, temperature=1.0),
        grpo=GRPOConfig(beta=0.001),
        rewards={"math": 1.0, "boxed_format": 0.1},
        optim=OptimConfig(lr=1e-3, warmup_ratio=0.0),
        log_completions_every=0,
    )
    dm = VLMDataModule(trained_tiny_model, train_file=str(tmp_path / "math.json"), batch_size=2, prompt_only=True)
    trainer = cpu_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, dm)
    assert trainer.global_step == 2 and "train/reward/mean" in trainer.callback_metrics


def test_paper_table6_rows_columns_and_paper_values(tmp_path):
    from scripts.paper_table6 import main, table

    def metrics(stage: str, values: dict[str, float], version: int = 0) -> None:
        folder = tmp_path / "qwen2_5_vl_7b_math" / stage / f"version_{version}" / "predictions"
        folder.mkdir(parents=True)
        named = {f"val/{key}": value for key, value in values.items()}
        (folder / "metrics.json").write_text(json.dumps({"step": 400, "metrics": named}))

    six = {"mmmu/acc": 50.0, "mathvista/acc": 70.0, "mathvision/acc": 30.0, "mathverse/acc": 40.0}
    six |= {"wemath/acc": 60.0, "mmk12/acc": 80.0, "wemath/score_strict": 35.5, "wemath/score_loose": 55.25}
    metrics("sft_m", {key: 0.0 for key in six})  # an older run of the stage: ignored
    metrics("sft_m", six, version=1)
    metrics("grpo", {"mmmu/acc": 51.0, "wemath/acc": 61.0})  # four benchmarks missing: no average
    text = table(tmp_path / "qwen2_5_vl_7b_math")
    lines = text.splitlines()
    head = "| method | MMMU-val | MathVista-mini | MathVision | MathVerse-mini | WeMath | MMK12-test | Avg |"
    assert lines[0].startswith(head) and lines[0].endswith("| WeMath strict | WeMath loose | Avg (paper) |")
    # mean of the six MC accuracies (50 + 70 + 30 + 40 + 60 + 80) / 6 = 55; paper SFT-M average 55.32
    assert "| SFT-M (DC-SFT) | 50.00 | 70.00 | 30.00 | 40.00 | 60.00 | 80.00 | 55.00 | 35.50 | 55.25 | 55.32 |" in lines
    assert "| GRPO | 51.00 | - | - | - | 61.00 | - | - | - | - | 55.44 |" in lines
    assert "| SFT (all data) | - | - | - | - | - | - | - | - | - | 53.88 |" in lines  # no run: the paper's only
    assert "| cold start (baseline) | - | - | - | - | - | - | - | - | - | - |" in lines
    assert lines[-1] == "| paper, best of any row | 52.56 | 74.07 | 32.96 | - | 62.30 | - | - | - | - | - |"
    assert main([str(tmp_path / "qwen2_5_vl_7b_math")]).startswith("### Table 6, ")
