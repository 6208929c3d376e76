"""Chat template + image processor -> token ids with assistant-only labels, and batch collation.

Why segment by segment: each assistant turn's labels must cover exactly its answer and `<|im_end|>`; system, prompt and
image tokens are masked (-100). We render the chat template for growing prefixes of the conversation, so the text is
exactly what `apply_chat_template` produces, then tokenize it piece by piece around special tokens (where the
tokenizer splits anyway), expanding each `<|image_pad|>` into the image's token count as the processor does. A test
checks the ids against the processor's own output on the real Qwen2.5 tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image

from datamodules.formats import IMAGE_MARKER, Sample
from datamodules.images import ImageSource, image_size, load_image, num_image_tokens
from datamodules.processor import image_factor, pixel_bounds, with_pixel_bounds

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
IM_END = "<|im_end|>"
IMAGE_PAD = "<|image_pad|>"


def to_chat(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """ms-swift messages (with `<image>` markers) -> chat-template messages with image content parts."""
    chat = []
    for message in messages:
        content = message["content"]
        if message["role"] != "assistant" and IMAGE_MARKER in content:
            parts: list[dict[str, str]] = []
            for j, text in enumerate(content.split(IMAGE_MARKER)):
                if j > 0:
                    parts.append({"type": "image"})
                if text:
                    parts.append({"type": "text", "text": text})
            chat.append({"role": message["role"], "content": parts})
        else:
            chat.append({"role": message["role"], "content": content})
    return chat


def render_segments(processor, messages: list[dict[str, str]], generation: bool = False) -> list[tuple[str, bool]]:
    """The templated conversation as (text, supervised) pieces.

    Training: every assistant answer plus its `<|im_end|>` is supervised. Generation: the final assistant turn (if any)
    is dropped and the generation prompt (`<|im_start|>assistant\\n`) appended.
    """
    chat = to_chat(messages)
    if generation and chat and chat[-1]["role"] == "assistant":
        chat = chat[:-1]

    def apply(msgs: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    segments: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(chat):
        if message["role"] != "assistant" or generation:
            continue
        prompt = apply(chat[:i], True)
        full = apply(chat[: i + 1], False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("chat template is not prefix-stable; cannot mask the prompt exactly")
        answer = full[len(prompt) :]
        cut = answer.rfind(IM_END)
        cut = len(answer) if cut < 0 else cut + len(IM_END)
        segments += [(prompt[len(done) :], False), (answer[:cut], True), (answer[cut:], False)]
        done = full
    if generation:
        segments.append((apply(chat, True)[len(done) :], False))
    elif not done:
        raise ValueError("no assistant turn to train on: add the answer as an assistant message")
    return [(text, sup) for text, sup in segments if text]


def tokenize_segments(
    tokenizer, segments: list[tuple[str, bool]], image_token_counts: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Token ids and labels; each `<|image_pad|>` becomes as many image tokens as its image has."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    counts: Iterator[int] = iter(image_token_counts)
    input_ids: list[int] = []
    labels: list[int] = []
    for text, supervised in segments:
        for j, piece in enumerate(text.split(IMAGE_PAD)):
            if j > 0:
                try:
                    n = next(counts)
                except StopIteration:
                    raise ValueError("more image placeholders than images") from None
                input_ids += [image_id] * n
                labels += [IGNORE_INDEX] * n
            if piece:
                ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                input_ids += ids
                labels += ids if supervised else [IGNORE_INDEX] * len(ids)
    if next(counts, None) is not None:
        raise ValueError("more images than image placeholders")
    return input_ids, labels


def encode_sample(processor, sample: Sample, images: list[Image.Image], generation: bool = False) -> dict[str, Any]:
    """One sample -> ids, labels and image tensors (images already loaded and smart-resized)."""
    image_inputs: dict[str, torch.Tensor] = {}
    counts: list[int] = []
    if images:
        image_inputs = dict(processor.image_processor(images=images, return_tensors="pt"))
        merge = processor.image_processor.merge_size**2
        counts = [int(thw.prod()) // merge for thw in image_inputs["image_grid_thw"]]
    segments = render_segments(processor, sample.messages, generation=generation)
    input_ids, labels = tokenize_segments(processor.tokenizer, segments, counts)
    return {"id": sample.id, "input_ids": input_ids, "labels": labels, "solution": sample.solution, **image_inputs}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a collated batch that a Qwen2.5-VL forward takes (ids, labels and solutions left out)."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


class Collator:
    """Pads a list of encoded samples into a batch. Right padding for training, left padding for generation."""

    def __init__(self, pad_token_id: int, image_token_id: int, padding_side: str = "right") -> None:
        self.pad_token_id = pad_token_id
        self.image_token_id = image_token_id
        self.padding_side = padding_side

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad `items` into one batch; an empty list gives an empty batch (`ids == []`), which steps skip."""
        width = max((len(item["input_ids"]) for item in items), default=0)
        ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            cols = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ids[row, cols] = torch.tensor(item["input_ids"])
            labels[row, cols] = torch.tensor(item["labels"])
            mask[row, cols] = 1
        batch: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "mm_token_type_ids": (ids == self.image_token_id).long() * mask,
            "ids": [item["id"] for item in items],
            "solutions": [item.get("solution") for item in items],
        }
        if any("tier" in item for item in items):  # set when the data carries a difficulty file
            batch["tiers"] = [item.get("tier") for item in items]
        if any("image_files" in item for item in items):  # image file names: identify items in difficulty rows
            batch["image_files"] = [list(item.get("image_files", ())) for item in items]
        with_images = [item for item in items if "pixel_values" in item]
        if with_images:
            batch["pixel_values"] = torch.cat([item["pixel_values"] for item in with_images])
            batch["image_grid_thw"] = torch.cat([item["image_grid_thw"] for item in with_images])
        return batch


class Encoder:
    """The one prompt-encoding path, shared by training, evaluation and sampling.

    Images are loaded and smart-resized with the processor's pixel bounds (saved with the checkpoint; `min_pixels` /
    `max_pixels` override them), the chat template is rendered, ids and assistant-only labels built, and batches are
    padded right (training) or left (generation).
    """

    def __init__(self, processor, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        self.processor = with_pixel_bounds(processor, min_pixels, max_pixels)
        self.min_pixels, self.max_pixels = pixel_bounds(self.processor)
        self.factor = image_factor(self.processor)  # 28 (Qwen2.5-VL) or 32 (Qwen3-VL) pixels per merged token
        tok = self.processor.tokenizer
        self.pad_token_id = tok.pad_token_id
        self.image_token_id = tok.convert_tokens_to_ids(IMAGE_PAD)

    def encode(self, sample: Sample, generation: bool = False, images: list[ImageSource] | None = None) -> dict:
        """One sample -> ids, labels and image tensors. `images` (paths, bytes or PIL images) default to the
        sample's own image paths."""
        where = f"{sample.source}: " if sample.source else ""
        sources = sample.images if images is None else images
        loaded = [load_image(src, self.min_pixels, self.max_pixels, where, self.factor) for src in sources]
        return encode_sample(self.processor, sample, loaded, generation=generation)

    def collate(self, items: list[dict[str, Any]], padding_side: str) -> dict[str, Any]:
        return Collator(self.pad_token_id, self.image_token_id, padding_side)(items)

    def prompts(self, samples: list[Sample], images: list[list[ImageSource]] | None = None) -> dict[str, Any]:
        """Left-padded generation prompts for `samples` (answers left out), ready for the sampler."""
        items = [self.encode(s, True, None if images is None else images[i]) for i, s in enumerate(samples)]
        return self.collate(items, "left")

    def measure(self, sample: Sample, generation: bool = False) -> tuple[int, int]:
        """(total tokens, image tokens) of a sample from image headers only (no decoding)."""
        where = f"{sample.source}: " if sample.source else ""
        bounds = (self.min_pixels, self.max_pixels, self.factor)
        counts = [num_image_tokens(*image_size(p, where), *bounds) for p in sample.images]
        segments = render_segments(self.processor, sample.messages, generation)
        ids, _ = tokenize_segments(self.processor.tokenizer, segments, counts)
        return len(ids), sum(counts)
