"""Qwen3-VL: loading, 32-pixel image tokens, chat template masking, M-RoPE positions of the shared sampler, DeepStack
in GRPO log-probs, and SFT / GRPO / difficulty on a tiny random Qwen3-VL built from a config."""

from __future__ import annotations

import json
import shutil

import lightning as L
import pytest
import torch
from PIL import Image

from assets.test_data import write_color_data
from callbacks.difficulty_writer import DifficultyWriter
from datamodules.collate import IGNORE_INDEX, Encoder, model_inputs
from datamodules.difficulty_file import read_difficulty
from datamodules.formats import Sample
from datamodules.processor import Qwen3VLImageOnlyProcessor, image_factor, load_processor
from datamodules.vlm_data import VLMDataModule
from lightning_modules.difficulty import DifficultyEstimator
from lightning_modules.grpo import GRPOConfig, GRPOModule
from lightning_modules.rollout import build_sequences, sequence_logprobs
from lightning_modules.sampling import SamplingConfig, prompt_positions, sample, stop_token_ids
from lightning_modules.sft import SFTModule, supervised_loss
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions, build_vlm, unwrap
from tests.helpers import cpu_trainer

FP32 = VLMOptions(dtype="float32", lora=None)
# Three prompts with 1, 2 and 3 images of different sizes and aspect ratios (left padding differs per row).
SIZES = [(64, 96), (130, 70), (40, 40), (100, 33), (200, 120), (90, 90)]


def _multi_image_prompts(encoder: Encoder) -> dict:
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10), (10, 200, 200), (120, 120, 120)]
    images = [Image.new("RGB", size, colour) for size, colour in zip(SIZES, colours)]
    samples, groups, start = [], [], 0
    for i, n in enumerate([1, 2, 3]):
        content = "<image>" * n + "What colors are these?"
        samples.append(Sample(id=f"q{i}", messages=[{"role": "user", "content": content}], images=[]))
        groups.append(images[start : start + n])
        start += n
    return encoder.prompts(samples, groups)


def test_processor_template_and_image_tokens(tiny_qwen3_model):
    processor = load_processor(tiny_qwen3_model)
    assert isinstance(processor, Qwen3VLImageOnlyProcessor) and image_factor(processor) == 32
    encoder = Encoder(processor)
    image = Image.new("RGB", (100, 70), (200, 10, 10))  # smart-resized to 96 x 64: 3 x 2 tokens of 32 px
    sample = Sample(
        id="a",
        messages=[{"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "red"}],
        images=[],
    )
    item = encoder.encode(sample, images=[image])
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert item["input_ids"].count(image_id) == 6 and item["image_grid_thw"].tolist() == [[1, 4, 6]]
    text = processor.tokenizer.decode(item["input_ids"])
    assert text.startswith("<|im_start|>user\n<|vision_start|>")  # Qwen3-VL adds no default system prompt
    supervised = [t for t, label in zip(item["input_ids"], item["labels"]) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == "red<|im_end|>"
    # Our segment-wise ids equal the processor's own encoding of the templated text.
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}]
    chat.append({"role": "assistant", "content": "red"})
    templated = processor.apply_chat_template(chat, tokenize=False)
    reference = processor(text=[templated], images=[image.resize((96, 64))], return_tensors="pt")
    assert reference["input_ids"][0].tolist() == item["input_ids"]


def test_unsupported_family_is_refused_with_the_supported_list(tiny_qwen3_model, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(tiny_qwen3_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen3_vl"):
        build_vlm(str(folder), FP32)


def test_sampler_positions_equal_get_rope_index_and_greedy_equals_generate(tiny_qwen3_model):
    model, processor = build_vlm(tiny_qwen3_model, FP32)
    model.eval()
    inputs = model_inputs(_multi_image_prompts(Encoder(processor)))
    steps = 6
    ours = sample(model, inputs, SamplingConfig(k=2, max_new_tokens=steps, do_sample=False), stop_ids=[])
    reference = model.generate(**inputs, max_new_tokens=steps, do_sample=False, eos_token_id=None)
    width = inputs["input_ids"].shape[1]
    for b in range(3):
        assert ours[b][0] == ours[b][1] == reference[b, width:].tolist()
    assert len({tuple(ours[b][0]) for b in range(3)}) == 3  # the answers depend on the prompt: not degenerate
    # Decode positions: what get_rope_index gives over prompt + answer equals the sampler's prompt_positions + step.
    _, next_pos = prompt_positions(unwrap(model), inputs)
    full = reference
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, steps, dtype=torch.long)], dim=1)
    mm = (full == model.config.image_token_id).long()
    positions, _ = model.model.get_rope_index(
        full, mm_token_type_ids=mm, image_grid_thw=inputs["image_grid_thw"], attention_mask=mask
    )
    expected = next_pos.view(1, 3, 1) + torch.arange(steps).view(1, 1, -1)
    assert torch.equal(positions[:, :, width:], expected.expand(3, -1, -1))
    assert (next_pos < inputs["attention_mask"].sum(1)).all()  # image tokens share positions: not the token count


def test_grpo_logprobs_include_deepstack_features(tiny_qwen3_model):
    model, processor = build_vlm(tiny_qwen3_model, FP32)
    model.eval()
    batch = _multi_image_prompts(Encoder(processor))
    inputs = model_inputs(batch)
    completions = [[[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], [[14], [15, 16]]]
    seqs = build_sequences(inputs, completions, pad_id=0)
    ours, _ = sequence_logprobs(model, inputs, seqs, with_grad=False)
    row, start = 0, 0
    for b, n in enumerate([1, 2, 3]):
        grid = inputs["image_grid_thw"][start : start + n]
        patches = int(grid.prod(-1).sum())
        first = int(inputs["image_grid_thw"][:start].prod(-1).sum()) if start else 0
        for tokens in completions[b]:
            ids = torch.cat([inputs["input_ids"][b], torch.tensor(tokens)]).unsqueeze(0)
            mask = torch.cat([inputs["attention_mask"][b], torch.ones(len(tokens), dtype=torch.long)]).unsqueeze(0)
            with torch.no_grad():
                logits = model(
                    input_ids=ids,
                    attention_mask=mask,
                    pixel_values=inputs["pixel_values"][first : first + patches],
                    image_grid_thw=grid,
                    mm_token_type_ids=(ids == model.config.image_token_id).long(),
                ).logits
            p = inputs["input_ids"].shape[1]
            ref = torch.log_softmax(logits[0, p - 1 : p - 1 + len(tokens)], -1)
            ref = ref.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
            torch.testing.assert_close(ours[row, : len(tokens)], ref, atol=1e-4, rtol=1e-4)
            row += 1
        start += n


def test_lora_all_targets_the_deepstack_mergers_and_freezing_covers_them(tiny_qwen3_model):
    model, _ = build_vlm(tiny_qwen3_model, VLMOptions(dtype="float32", lora=LoraOptions(r=4, target="all")))
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    for part in ("deepstack_merger_list.0.linear_fc1", "merger.linear_fc2", "blocks.0.mlp.linear_fc1", "attn.qkv"):
        assert any(part in name for name in adapted), part
    assert any("language_model.layers.0.self_attn.q_proj" in name for name in adapted)
    frozen, _ = build_vlm(tiny_qwen3_model, VLMOptions(dtype="float32", lora=None, freeze_merger=True))
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert not any("merger" in n for n in trainable) and any("visual.blocks" in n for n in trainable)


def test_sft_grpo_and_difficulty_run_on_qwen3_vl(tiny_qwen3_model, tmp_path):
    data = write_color_data(tmp_path / "sft", n=8)
    lora = VLMOptions(dtype="float32", lora=LoraOptions(r=8, alpha=16, dropout=0.0))
    torch.manual_seed(0)
    module = SFTModule(tiny_qwen3_model, vlm=lora, optim=OptimConfig(lr=5e-3, warmup_ratio=0.0, weight_decay=0.0))
    dm = VLMDataModule(tiny_qwen3_model, train_file=str(data), batch_size=4, shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.configure_model()
    with torch.no_grad():
        before, _ = supervised_loss(module.model, batch)
    cpu_trainer(max_steps=6, enable_checkpointing=False, default_root_dir=tmp_path).fit(module, dm)
    with torch.no_grad():
        after, _ = supervised_loss(module.model, batch)
    assert after < before

    problems = write_color_data(tmp_path / "rl", n=4, fmt="problem")
    L.seed_everything(0)
    grpo = GRPOModule(
        tiny_qwen3_model,
        vlm=lora,
        sampling=SamplingConfig(k=4, max_new_tokens=3, temperature=1.5),
        grpo=GRPOConfig(beta=0.04),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        log_completions_every=0,
    )
    grpo_dm = VLMDataModule(tiny_qwen3_model, train_file=str(problems), batch_size=2, prompt_only=True)
    trainer = cpu_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(grpo, grpo_dm)
    assert trainer.global_step == 2 and "train/reward/mean" in trainer.callback_metrics

    out = tmp_path / "difficulty.jsonl"
    estimator = DifficultyEstimator(tiny_qwen3_model, vlm=FP32, sampling=SamplingConfig(k=4, max_new_tokens=3))
    predict_dm = VLMDataModule(
        tiny_qwen3_model, predict_file=str(problems), eval_batch_size=2, predict_done_file=str(out)
    )
    cpu_trainer(callbacks=[DifficultyWriter(str(out), report=False)]).predict(
        estimator, predict_dm, return_predictions=False
    )
    rows = read_difficulty(out)
    assert len(rows) == 4 and all(r.k == 4 for r in rows.values())
    stops = stop_token_ids(load_processor(tiny_qwen3_model), unwrap(estimator.model))
    assert stops  # <|im_end|> and <|endoftext|> exist in the Qwen3-VL tokenizer as in Qwen2.5-VL


def test_qlora_keeps_vision_tower_mergers_and_lm_head_unquantised(tiny_qwen3_model):
    bnb = pytest.importorskip("bitsandbytes")
    from lightning_modules.vlm import QuantOptions

    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0), qlora=QuantOptions(compute_dtype="float32"))
    model, _ = build_vlm(tiny_qwen3_model, vlm)
    modules = dict(unwrap(model).named_modules())
    quantised = [n for n, m in modules.items() if isinstance(m, bnb.nn.Linear4bit)]
    assert any("language_model.layers.0.mlp.down_proj" in n for n in quantised)
    assert not any("visual" in n or "lm_head" in n for n in quantised)  # tower, merger, DeepStack mergers, lm_head
