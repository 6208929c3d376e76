"""Composed configs: every run in configs/runs.yaml parses and instantiates, every fragment is used, no value is
copied by hand, and the composition gives the values each experiment promises (a renamed argument or a broken
fragment fails here, not in the next experiment)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from scripts.runs import command, load_runs

RUNS = load_runs()
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]


@pytest.fixture(autouse=True)
def no_asset_build(monkeypatch, tmp_path):
    """Parsing must not build the demo assets: `demo://x/y` resolves to a path under tmp_path instead."""
    import assets

    monkeypatch.setattr(assets, "ensure", lambda name: tmp_path / name)


def compose(name: str, *extra: str, tmp_path: Path):
    from train import main

    args = command(name)[1:]  # run=False parses without a subcommand: fit / validate / predict share one schema
    return main([*args, *CPU, "--trainer.default_root_dir", str(tmp_path), *extra], run=False)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_run_parses_and_instantiates(name, tmp_path):
    cli = compose(name, tmp_path=tmp_path)
    assert cli.model is not None and cli.datamodule is not None
    assert "demo://" not in repr(cli.config)  # resolved at the command-line edge, before classes are built
    assert cli.datamodule.hparams.model_path == cli.model.hparams.model_path != ""


def test_every_fragment_is_used_by_a_run():
    used = {Path(part) for name in RUNS for part in command(name) if part.endswith(".yaml")}
    files = {p for p in Path("configs").rglob("*.yaml") if p.name != "runs.yaml"}
    assert files - used == set(), "fragments no run uses"


def test_no_value_is_copied_between_fragments():
    """A non-trivial line in more than two fragments is a copied block. Exceptions: a reference to a shared name
    (`key: "${run:x}"`, the mechanism that avoids copies) and the class_path line that says which module runs."""
    where = collections.defaultdict(set)
    for path in Path("configs").rglob("*.yaml"):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.split(" #")[0].strip()
            reference = re.fullmatch(r'[\w.]+: "\$\{run:\w+\}"', text)
            if (
                len(text) > 25
                and not text.startswith("#")
                and not reference
                and "class_path: lightning_mod" not in text
            ):
                where[text].add(str(path))
    copied = {line: sorted(files) for line, files in where.items() if len(files) > 2}
    assert copied == {}


def test_demo_stages_compose_as_documented(tmp_path):
    cold = compose("demo/cold_start", tmp_path=tmp_path)
    assert type(cold.model).__name__ == "SFTModule"
    assert cold.model.vlm.lora.r == 64 and cold.model.vlm.lora.modules_to_save == []  # vision pre-aligned, frozen
    assert cold.model.optim.lr == 5e-4
    assert cold.trainer.max_epochs == 2 and cold.model.hparams.export_dir == "runs/demo/cold_start/model"
    sft_m = compose("demo/sft_m", tmp_path=tmp_path)
    assert sft_m.model.vlm.lora.r == 32 and sft_m.model.optim.lr == 1e-4 and sft_m.trainer.max_steps == 50
    assert sft_m.datamodule.selection.preset == "sft_m"
    assert sft_m.datamodule.hparams.difficulty_file == "runs/demo/difficulty/difficulty.jsonl"
    assert sft_m.model.hparams.model_path == "runs/demo/cold_start/model"
    noisy = compose("demo/noise/sft_em", tmp_path=tmp_path)
    assert noisy.datamodule.label_noise.share == 0.1 and noisy.datamodule.selection.preset == "sft_em"
    assert noisy.datamodule.hparams.difficulty_file == "runs/demo/noise/difficulty/difficulty.jsonl"
    assert noisy.model.hparams.model_path == "runs/demo/cold_start/model"  # the clean cold start
    difficulty = compose("demo/difficulty", tmp_path=tmp_path)
    assert type(difficulty.model).__name__ == "DifficultyEstimator" and difficulty.model.vlm.lora is None
    assert difficulty.model.sampling.max_new_tokens == 16 and difficulty.model.sampling.k == 8
    assert difficulty.datamodule.hparams.predict_done_file == "runs/demo/difficulty/difficulty.jsonl"  # linked
    grpo = compose("demo/grpo", tmp_path=tmp_path)
    assert grpo.model.sampling.temperature == 0.9 and grpo.model.grpo.beta == 0.04
    assert grpo.datamodule.hparams.prompt_only and grpo.datamodule.hparams.batch_size == 2
    callbacks = {type(c).__name__ for c in grpo.trainer.callbacks}
    assert {"AdapterCheckpoint", "GenerativeEval"} <= callbacks and "DifficultyWriter" not in callbacks


def test_grpo_variants_compose_as_documented(tmp_path):
    """GRPO-M selects the medium tier for the prompts; grpo_filtered turns group filtering on; plain GRPO has it off."""
    grpo = compose("demo/grpo", tmp_path=tmp_path)
    assert not grpo.model.group_filter.enabled and grpo.datamodule.selection.keeps_all()
    assert grpo.model.hparams.rollout_log == "rollouts.jsonl"
    grpo_m = compose("demo/grpo_m", tmp_path=tmp_path)
    assert grpo_m.datamodule.selection.tiers == ["medium"] and grpo_m.datamodule.hparams.prompt_only
    assert grpo_m.datamodule.hparams.difficulty_file == "runs/demo/difficulty/difficulty.jsonl"
    assert grpo_m.trainer.logger.name == "grpo_m" and not grpo_m.model.group_filter.enabled
    filtered = compose("demo/grpo_filtered", tmp_path=tmp_path)
    assert filtered.model.group_filter.enabled and filtered.model.group_filter.max_resample == 2
    assert filtered.model.group_filter.min_std == 0.0 and filtered.trainer.logger.name == "grpo_filtered"
    assert filtered.datamodule.selection.keeps_all() and filtered.datamodule.hparams.batch_size == 2


def test_refresh_run_composes_as_documented(tmp_path):
    """demo/sft_m_refresh is demo/sft_m plus DifficultyRefresh every 25 steps, sampling and scorer left to the
    difficulty file's; no other run refreshes (the callback is off unless a fragment sets it)."""
    run = compose("demo/sft_m_refresh", tmp_path=tmp_path)
    refresh = next(c for c in run.trainer.callbacks if type(c).__name__ == "DifficultyRefresh")
    assert refresh.every_n_steps == 25 and refresh.refresh_size is None and refresh.sampling is None
    assert run.datamodule.selection.preset == "sft_m" and run.trainer.logger.name == "sft_m_refresh"
    assert run.trainer.max_steps == 50 and run.model.hparams.model_path == "runs/demo/cold_start/model"
    static = compose("demo/sft_m", tmp_path=tmp_path)
    assert not any(type(c).__name__ == "DifficultyRefresh" for c in static.trainer.callbacks)


def test_paper_stages_compose_as_documented(tmp_path):
    sft = compose("paper/qwen2_5_vl_7b/sft_em_qlora", tmp_path=tmp_path)
    assert sft.model.vlm.lora.target == "all" and sft.model.vlm.qlora.quant_type == "nf4"
    batch = next(c for c in sft.trainer.callbacks if type(c).__name__ == "GlobalBatchSize")
    assert batch.size == 16 and sft.datamodule.hparams.max_pixels == 802816  # 1 x 1 GPU x 16 accumulation
    assert sft.model.hparams.model_path == "runs/paper/qwen2_5_vl_7b/cold_start/model"
    assert sft.trainer.logger.name == "sft_em_qlora" and sft.trainer.logger.version == 0  # a fresh folder
    evaluation = next(c for c in sft.trainer.callbacks if type(c).__name__ == "GenerativeEval")
    assert [b.name for b in evaluation.benchmarks] == ["imagenet_val", "imagenet_r", "imagenet_a"]
    assert evaluation.max_pixels is None  # the checkpoint's (12.8 M for Qwen2.5-VL), as the official evaluation
    cold = compose("paper/qwen2_5_vl_3b/cold_start", tmp_path=tmp_path)
    assert cold.model.vlm.lora is None and cold.model.hparams.model_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert not any(type(c).__name__ == "GenerativeEval" for c in cold.trainer.callbacks)
    grpo = compose("paper/qwen2_5_vl_3b/grpo_qlora", tmp_path=tmp_path)
    assert grpo.datamodule.hparams.batch_size == 2 and grpo.trainer.accumulate_grad_batches == 1
    assert grpo.trainer.gradient_clip_val is None and grpo.model.grpo.max_grad_norm == 1.0


def test_qwen3_vl_runs_compose_the_imagenet_pipeline(tmp_path):
    cold = compose("paper/qwen3_vl_4b/cold_start", tmp_path=tmp_path)
    assert cold.model.hparams.model_path == "Qwen/Qwen3-VL-4B-Instruct"
    sft = compose("paper/qwen3_vl_8b/sft_em_qlora", tmp_path=tmp_path)
    assert sft.model.hparams.model_path == "runs/paper/qwen3_vl_8b/cold_start/model"
    assert sft.model.vlm.qlora.quant_type == "nf4" and sft.datamodule.hparams.max_pixels == 802816
    assert sft.datamodule.hparams.difficulty_file == "runs/paper/qwen3_vl_8b/difficulty/difficulty.jsonl"


def test_readme_commands_are_runs():
    """Every `scripts/runs.py <name>` in the README names a run that exists."""
    names = re.findall(r"scripts/runs\.py (?:--print )?([\w/]+)", Path("README.md").read_text(encoding="utf-8"))
    assert names and set(names) <= set(RUNS)


@pytest.mark.parametrize("name", ["demo/difficulty", "paper/qwen2_5_vl_7b/sft_m_qlora"])
def test_print_config_under_a_subcommand_resolves_every_reference(name, capsys):
    """What users run: `train.py <subcommand> ... --print_config` (references must resolve under `fit:` too)."""
    import yaml

    from train import main

    with pytest.raises(SystemExit):
        main([*command(name), "--print_config"])
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert "${" not in printed and config["model"]["init_args"]["model_path"].startswith(config["run"]["dir"])
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == config["run"]["dir"]
