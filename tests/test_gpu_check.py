"""The GPU check's CPU parts and the memory estimator: `estimate` on small configurations computed by hand, LoRA
counts of a real architecture, `bench/gpu_check.py --dry-run` for all three models on the meta device, and the
estimator on a composed paper config and on a GPU-check JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from bench.memory_estimate import NF4_BYTES, Options, estimate

# layers 2, hidden 8, k/v width 4, MLP 16, vocabulary 10; a 1-block vision tower of width 4 (MLP 8)
ARCH = {
    "family": "qwen2_5_vl",
    "layers": 2,
    "hidden": 8,
    "intermediate": 16,
    "kv_dim": 4,
    "vocab": 10,
    "vision_layers": 1,
    "vision_hidden": 4,
    "vision_intermediate": 8,
    "vision_mlp_tensors": 3,
    "vision_lora_inputs": 4,
    "image_patches_per_token": 4,
    "factor": 28,
    "params_total": 1000,
    "params_vision": 100,
    "params_lm_head": 0,
    "params_quantized": 600,
    "lora_per_rank_language": 50,
    "lora_per_rank_vision": 20,
}
SFT = Options(lora_r=2, gradient_checkpointing=False, batch=1, seq_len=10, image_tokens=1, supervised=3)


def test_lora_sft_by_hand():
    e = estimate(ARCH, SFT)
    assert e["weights"] == 1000 * 2  # bf16
    assert (e["adapter"], e["grads"], e["optimizer"]) == (2 * 50 * 4, 2 * 50 * 4, 2 * 50 * 8)  # fp32 adapter + AdamW
    # per layer and token: 4h + 2kv + 3I = 88 elements, + dropout inputs 6h + I = 64 -> 152 x 2 B + 64 mask bytes
    per_layer = 152 * 2 + 64
    assert e["activations"] == 10 * (2 * per_layer + 2 * 8 * 2)  # 10 tokens, 2 layers, + embedding/final norm
    assert e["logits"] == 3 * 10 * 4 * 2  # supervised rows only, fp32, x2
    assert e["kv_cache"] == e["transient"] == 0
    assert e["peak"] == 2000 + 400 + 400 + 800 + 7680 + 240


def test_checkpointing_keeps_one_vector_per_layer_plus_one_layer():
    e = estimate(ARCH, replace(SFT, gradient_checkpointing=True))
    assert e["activations"] == 10 * (2 * 8 * 2 + (152 * 2 + 64) + 2 * 8 * 2)
    assert e["peak"] == 3600 + 4320 + 240


def test_qlora_weights_and_fp32_upcast():
    e = estimate(ARCH, replace(SFT, qlora=True, gradient_checkpointing=True))
    assert NF4_BYTES[True] == pytest.approx(4.127 / 8, abs=1e-4)  # QLoRA paper: 4.127 bits per parameter
    assert e["weights"] == pytest.approx(600 * NF4_BYTES[True] + 400 * 4)  # the rest upcast to fp32 by peft
    assert e["activations"] == 10 * (2 * 8 * 4 + (152 * 4 + 64) + 2 * 8 * 4)  # fp32 residual stream
    cast = estimate(ARCH, replace(SFT, qlora=True, cast_bf16=True))  # Lightning bf16-true casts everything
    assert cast["weights"] == pytest.approx(600 * NF4_BYTES[True] + 400 * 2) and cast["adapter"] == 2 * 50 * 2


def test_rollout_kv_cache_and_prefill():
    o = Options(mode="rollout", lora_r=None, batch=2, k=3, seq_len=10, max_new_tokens=5, image_tokens=1)
    e = estimate(ARCH, o)
    assert e["kv_cache"] == 2 * 2 * 4 * 2 * (2 * 3) * (10 + 5)  # 2 x layers x kv x bytes x rows x tokens
    assert e["transient"] == 2 * 10 * (4 * 8 + 3 * 16) * 2  # prefill MLP of the prompt batch (> ViT, > decode)
    assert (e["adapter"], e["grads"], e["optimizer"], e["activations"]) == (0, 0, 0, 0)
    assert e["peak"] == 2000 + 2880 + 3200


def test_grpo_takes_the_larger_phase_and_trains_the_vision_tower_with_all():
    o = Options(lora_r=2, lora_target="all", mode="grpo", batch=1, k=2, seq_len=10, max_new_tokens=5, image_tokens=1)
    e = estimate(ARCH, o)
    assert e["adapter"] == 2 * (50 + 20) * 4
    vit_block = (4 * 4 + 2 * 4 + 3 * 8 + 4 * 4 + 8) * 2 + (4 * 4 + 8)  # ViT rule, LoRA on its 4 h-inputs + fc2
    assert e["activations"] == 2 * 15 * (2 * 8 * 2 + 368 + 2 * 8 * 2) + 4 * (1 * 4 * 2 + vit_block)
    assert e["logits"] == (2 * 5 + 256 * 2) * 10 * 4  # every completion row kept for logsumexp's backward
    rollout_phase = e["kv_cache"] + e["transient"]
    assert e["peak"] == 2000 + 560 + 560 + 1120 + max(rollout_phase, e["activations"] + e["logits"])


def test_sharding_divides_what_each_strategy_shards():
    full = Options(lora_r=None, seq_len=10, image_tokens=1, devices=4)
    zero3 = estimate(ARCH, replace(full, strategy="deepspeed_stage_3"))
    assert (zero3["weights"], zero3["grads"], zero3["optimizer"]) == (500, 500, 3000)  # fp32 master + moments: 12 B
    assert zero3["transient"] == 2 * (1000 - 100 - 10 * 8) / 2 * 2  # a gathered decoder layer + the prefetched one
    zero2 = estimate(ARCH, replace(full, strategy="deepspeed_stage_2"))
    assert (zero2["weights"], zero2["grads"], zero2["optimizer"], zero2["transient"]) == (2000, 500, 3000, 0)
    ddp = estimate(ARCH, replace(full, strategy="ddp"))
    assert (ddp["weights"], ddp["grads"], ddp["optimizer"]) == (2000, 2000, 4000)  # bf16 AdamW moments
    assert ddp["activations"] == 10 * (2 * 8 * 2 + (88 + 32) * 2 + 32) + 4 * (4 * 2 + (48 + 16) * 2)  # inputs kept


def test_arch_numbers_of_qwen2_5_vl_3b():
    from bench.memory_estimate import preset_numbers

    a = preset_numbers("3b")
    # one layer: q 2048+2048, k and v 2048+256, o 2048+2048, gate / up / down 2048+11008 each
    assert a["lora_per_rank_language"] == 36 * (4096 + 2 * 2304 + 4096 + 3 * 13056)
    assert a["params_total"] == pytest.approx(3.75e9, rel=0.01) and a["params_lm_head"] == 0  # tied
    assert (a["kv_dim"], a["factor"]) == (256, 28)


def test_gpu_check_dry_run_builds_every_model_on_meta(capsys):
    from bench.gpu_check import main

    out = main(["--dry-run", "--models", "3b,7b,qwen3_4b"])
    assert [r["model"] for r in out] == ["3b", "7b", "qwen3_4b"]
    for row, released in zip(out, (3.75e9, 8.29e9, 4.44e9)):
        assert row["devices"] == ["meta"]  # nothing allocated
        assert row["parts"]["total"] == pytest.approx(released, rel=0.01)
        assert row["sft_batch"]["image_tokens"] == 1024 and row["sft_batch"]["supervised"] > 0
    assert out[2]["parts"]["lm_head"] == 0 and out[1]["parts"]["lm_head"] > 0  # 4B ties, 7B does not
    printed = capsys.readouterr().out
    assert "896x896" in printed and "1024x1024" in printed and "plan grpo" in printed and "dry run ok" in printed


def test_gpu_check_without_cuda_skips(capsys):
    import torch

    from bench.gpu_check import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    assert main(["--models", "3b"]) == []
    assert "skipped, CUDA is not available" in capsys.readouterr().out


def test_estimate_of_a_composed_paper_config(capsys):
    from bench.memory_estimate import main
    from scripts.runs import command

    fragments = command("paper/qwen2_5_vl_7b/grpo_qlora")[1:]  # --config configs/base.yaml --config configs/paper/...
    (row,) = main(fragments)  # composed as train.py composes them
    o = row["options"]
    assert row["model"] == "7b" and o.mode == "grpo" and o.qlora and o.cast_bf16 and o.lora_target == "all"
    assert (o.batch, o.k, o.max_new_tokens, o.image_tokens) == (2, 8, 128, 1024)  # 802,816 px / 28^2
    assert 10 < row["peak"] / 2**30 < 40
    assert "| 7b | grpo QLoRA nf4 LoRA r32 all" in capsys.readouterr().out


def test_measured_rows_print_beside_the_prediction(tmp_path, capsys):
    from bench.gpu_check import Settings, lora_options
    from bench.memory_estimate import main

    shape = {"image_tokens": 1024, "k": 8, "seq_len": 1066, "prompt_len": 1061}
    rows = [
        {"model": "3b", "mode": "lora", "shape": shape, "options": asdict(lora_options(False, Settings()))},
        {"model": "3b", "mode": "grpo", "shape": shape, "options": asdict(lora_options(False, Settings()))},
    ]
    rows[0].update(status="ok", peak_gib=9.1)
    rows[1].update(status="ok", peak_gib=15.2, tokens=2 * 8 * 64)  # mean completion 64 tokens
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps({"settings": asdict(Settings()), "rows": rows}))
    predicted = main(["--measured", str(path)])
    printed = capsys.readouterr().out
    assert "| 9.10 |" in printed and "| 15.20 |" in printed and "2 x k 8 x 64 new" in printed
    assert predicted[0]["peak"] < predicted[1]["peak"]
