"""The rollout benchmark's own pieces: the baselines' answer bookkeeping, the realistic shapes, the compute model.

Why: the benchmark runs for minutes, so a wrong row-to-item mapping of `num_return_sequences` or a mis-sized
realistic model would only show there. Run: `python -m pytest tests/test_rollout_bench.py -q` (a few seconds).
"""

from __future__ import annotations

import torch

from bench.rollout_throughput import (
    REALISTIC_IMAGE,
    REALISTIC_TEXT,
    REALISTIC_VISION,
    Tally,
    linear_macs,
    official_pass,
    real_config,
)
from datamodules.images import OFFICIAL_TRAIN_MAX_PIXELS, num_image_tokens


def test_both_baselines_give_k_answers_per_item(tiny_model, tmp_path):
    from assets.test_data import write_color_data
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.vlm import VLMOptions, build_vlm

    model, processor = build_vlm(tiny_model, VLMOptions(dtype="float32", lora=None))
    items = write_color_data(tmp_path / "items", n=3, fmt="problem")
    data = VLMDataModule(model_path=tiny_model, predict_file=str(items), eval_batch_size=3, max_length=None)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    kwargs = {"do_sample": True, "max_new_tokens": 3, "pad_token_id": processor.tokenizer.pad_token_id}
    for nrs in (False, True):
        tally = Tally()
        torch.manual_seed(0)
        rows = official_pass(model, processor, batch, 4, kwargs, set(), lambda a, s: False, tally, nrs=nrs)
        assert [row["id"] for row in rows] == batch["ids"]
        assert all(len(row["answers"]) == 4 for row in rows)
        assert tally.lengths == [3] * 12  # no stop ids: every completion runs to max_new_tokens


def test_realistic_shapes():
    assert num_image_tokens(REALISTIC_IMAGE, REALISTIC_IMAGE, max_pixels=OFFICIAL_TRAIN_MAX_PIXELS) == 256
    head = REALISTIC_TEXT["hidden_size"] // REALISTIC_TEXT["num_attention_heads"]
    assert sum(REALISTIC_TEXT["rope_parameters"]["mrope_section"]) == head // 2
    assert REALISTIC_VISION["out_hidden_size"] == REALISTIC_TEXT["hidden_size"]


def test_compute_model_at_3b():
    """k passes redo the vision tower and the prefill k times; nrs redoes only the prefill; decoding is the same."""
    macs = linear_macs(real_config("3B"), patches=1024, prompt=290, new=8, k=8)
    assert macs["ours"] < macs["nrs"] < macs["official"]
    assert 7.0 < macs["official"] / macs["ours"] < 7.4  # ~0.66 T vision + 0.80 T prefill + 0.20 T decoding per item
    long = linear_macs(real_config("3B"), patches=1024, prompt=290, new=256, k=8)
    assert long["official"] / long["ours"] < macs["official"] / macs["ours"]
