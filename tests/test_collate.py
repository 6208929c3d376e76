"""Assistant-only masking is exact on the real Qwen2.5 chat template and tokenizer."""

from __future__ import annotations

import torch
from PIL import Image

from datamodules.collate import IGNORE_INDEX, Collator, encode_sample
from datamodules.formats import Sample
from datamodules.processor import load_processor


def _sample(messages, images=1):
    return Sample(id="x", messages=messages, images=["unused"] * images, solution=messages[-1]["content"])


def test_masking_matches_processor_and_covers_only_answers(tiny_qwen_model):
    processor = load_processor(tiny_qwen_model)
    messages = [
        {"role": "user", "content": "<image>What is this? Output the answer using one word."},
        {"role": "assistant", "content": "jack-o'-lantern"},
        {"role": "user", "content": "And the colour?"},
        {"role": "assistant", "content": "orange"},
    ]
    image = Image.new("RGB", (112, 84), (255, 128, 0))
    item = encode_sample(processor, _sample(messages), [image])
    # Reference: the processor's own tokenization of the full templated conversation.
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": messages[0]["content"][7:]}]},
        *messages[1:],
    ]
    text = processor.apply_chat_template(chat, tokenize=False)
    reference = processor(text=[text], images=[image], return_tensors="pt")
    assert item["input_ids"] == reference["input_ids"][0].tolist()
    assert torch.equal(item["pixel_values"], reference["pixel_values"])
    # Supervised tokens decode to exactly the two answers, each followed by <|im_end|>.
    tok = processor.tokenizer
    supervised = [t for t, lab in zip(item["input_ids"], item["labels"]) if lab != IGNORE_INDEX]
    assert tok.decode(supervised) == "jack-o'-lantern<|im_end|>orange<|im_end|>"
    # Every image token and every system/user token is masked.
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert item["input_ids"].count(image_id) == 12  # 84x112 -> 3x4 blocks of 28 px
    assert all(lab == IGNORE_INDEX for t, lab in zip(item["input_ids"], item["labels"]) if t == image_id)


def test_generation_prompt_and_left_padding(tiny_qwen_model):
    processor = load_processor(tiny_qwen_model)
    short = _sample([{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "yes"}])
    long = _sample(
        [{"role": "user", "content": "<image>A longer question here"}, {"role": "assistant", "content": "no"}]
    )
    image = Image.new("RGB", (56, 56))
    items = [encode_sample(processor, s, [image], generation=True) for s in (short, long)]
    text = processor.tokenizer.decode(items[0]["input_ids"])
    assert text.endswith("<|im_start|>assistant\n") and "yes" not in text
    batch = Collator(processor.tokenizer.pad_token_id, processor.image_token_id, "left")(items)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert batch["mm_token_type_ids"].sum() == 8 and batch["image_grid_thw"].shape == (2, 3)
