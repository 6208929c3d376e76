"""Grounding pre-training probe for the embedded demo model (issue 10): can the demo model learn to ground at all?

The grounding demo's cold start answers one box for every canvas. This script runs the two stages that, on
2026-12-03, first made the demo model read where a shape is, outside any asset, so their effect can be measured
before they become one:

1. `align`: the vision tower (language model out of the loop, as `assets/vision_alignment.py`) learns to put each
   merged token's cell content *and position* into word space: a token covering a shape is regressed onto the sum of
   the input embeddings of its colour, its shape, its column (" zero" ... " four") and its row (" top" ...
   " bottom"), a background token onto " background". Why: the vision tower is translation-equivariant (patch
   convolution, relative 2-D RoPE, no absolute position embedding), so without this a shape's tokens look alike
   wherever it is, and a 135M language model cannot recover positions from M-RoPE in a few hundred steps.
2. `pretrain`: the language model (all of it but the embeddings, bf16 autocast) learns boxes on canvases with the
   bare expression as the prompt (not the DC-SFT prompt, which the cold start teaches); `--shapes 1 1` first, so
   it only has to read where, not choose which.

Canvases come from the shapes of the easy-vqa train images that no demo split uses; `evaluate` scores canvases of
easy-vqa *test* shapes (IoU >= 0.5 with the DC-SFT IoU), with the bare and the DC-SFT prompt.

    python scripts/grounding_pretrain_probe.py align --model .cache/demo/smollm2-vl --out .cache/experiments/aligned
    python scripts/grounding_pretrain_probe.py pretrain --model .cache/experiments/aligned --shapes 1 1 \
        --out .cache/experiments/pretrained
    python scripts/grounding_pretrain_probe.py evaluate --model .cache/experiments/pretrained --shapes 2 4
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.demo_data import COLORS, SHAPES, unused_train_images  # noqa: E402
from assets.demo_model import DEMO_MAX_PIXELS, DEMO_MIN_PIXELS  # noqa: E402
from assets.grounding_demo_data import Canvas, canvases, cutouts  # noqa: E402
from assets.shape_canvas import CANVAS  # noqa: E402
from assets.tiny import image_processor  # noqa: E402
from assets.vision_alignment import image_tokens, word_embedding  # noqa: E402
from datamodules.benchmarks.grounding import rec_prompt  # noqa: E402
from datamodules.grounding_data import sft_target  # noqa: E402
from datamodules.scoring import iou, parse_box  # noqa: E402

CELL = 28  # px per merged image token
GRID = CANVAS // CELL
COLUMNS = ["zero", "one", "two", "three", "four"]
ROWS = ["top", "upper", "middle", "lower", "bottom"]
FAMILIES = [COLORS, SHAPES, COLUMNS, ROWS]  # a shape token carries all four, a background token only "background"
MIN_SHAPE_PIXELS = 80  # of a cell's 784, for the cell to count as that shape's


def probe_canvases(n: int, split: str, shapes: tuple[int, int], seed: int) -> list[Canvas]:
    """n canvases of `shapes` shapes each: train = shapes of the unused easy-vqa train images, test = test shapes."""
    pool = cutouts(split)
    if split == "train":
        unused = set(unused_train_images())
        pool = tuple(c for c in pool if c.image_id in unused)
    return canvases(pool, n, random.Random(seed), split, shapes)


def cell_labels(canvas: Canvas) -> torch.Tensor:
    """[tokens, 4] word indices per family for each merged token (raster order); -1 = family absent (background
    tokens carry no position); index len(family) of colours / shapes = " background"."""
    labels = torch.full((GRID * GRID, 4), -1, dtype=torch.long)
    masks = []
    for placed in canvas.placed:
        full = np.zeros((CANVAS, CANVAS), dtype=bool)
        x1, y1, x2, y2 = placed.box
        full[y1:y2, x1:x2] = placed.mask
        masks.append(full)
    for token in range(GRID * GRID):
        row, col = divmod(token, GRID)
        counts = [m[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL].sum() for m in masks]
        best = int(np.argmax(counts))
        if counts[best] >= MIN_SHAPE_PIXELS:
            shape = canvas.placed[best].cutout
            labels[token] = torch.tensor([COLORS.index(shape.colour), SHAPES.index(shape.shape), col, row])
        else:
            labels[token, :2] = torch.tensor([len(COLORS), len(SHAPES)])
    return labels


def family_words(model, tokenizer) -> list[torch.Tensor]:
    """Per family, the input embeddings of its words ([words, hidden]); colours and shapes end with "background"."""
    words = [[*family, "background"] if i < 2 else family for i, family in enumerate(FAMILIES)]
    return [torch.stack([word_embedding(model, tokenizer, w) for w in family]) for family in words]


def family_logits(tokens: torch.Tensor, candidates: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per family, the cosine of each token ([images, tokens, hidden]) with each of the family's words."""
    unit = torch.nn.functional.normalize(tokens, dim=-1)
    return [unit @ torch.nn.functional.normalize(words, dim=-1).T for words in candidates]


@torch.no_grad()
def decoding_accuracy(model, tokenizer, test: list[Canvas]) -> dict[str, float]:
    """Per family, the share of tokens whose nearest word (by cosine) is their cell's word (tokens that carry it)."""
    pixels = image_processor(DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)(images=[c.image for c in test], return_tensors="pt")
    tokens = image_tokens(model, pixels["pixel_values"], pixels["image_grid_thw"])
    gold = torch.stack([cell_labels(c) for c in test])
    logits = family_logits(tokens, family_words(model, tokenizer))
    names = ("colour", "shape", "column", "row")
    return {
        n: round(100 * (lg.argmax(-1) == gold[..., f])[gold[..., f] >= 0].float().mean().item(), 1)
        for f, (n, lg) in enumerate(zip(names, logits))
    }


def align(model, tokenizer, train: list[Canvas], steps: int, batch: int, lr: float) -> None:
    """Stage 1: train the vision tower so each merged token matches its cell's words (MSE to their summed embeddings
    plus, per family, a cross-entropy over the family's words by cosine at temperature 0.05)."""
    candidates = family_words(model, tokenizer)
    pixels = image_processor(DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)(images=[c.image for c in train], return_tensors="pt")
    labels = torch.stack([cell_labels(c) for c in train])
    per_image = int(pixels["image_grid_thw"][0].prod())
    visual = model.model.visual
    for param in model.parameters():
        param.requires_grad_(False)
    for param in visual.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(visual.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(steps):
        pick = torch.randint(0, len(train), (batch,), generator=generator)
        rows = torch.cat([pixels["pixel_values"][i * per_image : (i + 1) * per_image] for i in pick.tolist()])
        tokens = image_tokens(model, rows, pixels["image_grid_thw"][pick])
        gold = labels[pick]
        target = sum(
            words_[gold[..., f].clamp(min=0)] * (gold[..., f : f + 1] >= 0) for f, words_ in enumerate(candidates)
        )
        loss = torch.nn.functional.mse_loss(tokens, target)
        for family, logits in enumerate(family_logits(tokens, candidates)):
            loss = loss + torch.nn.functional.cross_entropy(
                (logits / 0.05).flatten(0, 1), gold[..., family].flatten(), ignore_index=-1
            )
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, steps // 5) == 0:
            print(f"[align] step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    for param in model.parameters():
        param.requires_grad_(True)


def chat(canvas: Canvas, prompt: str, answer: bool) -> str:
    """One canvas as Qwen2.5-VL chat text: the bare expression without a system turn (the pre-training format), or
    the DC-SFT prompt after the template's default system turn (what the cold start and evaluation use)."""
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if prompt == "dcsft" else ""
    image = "<|vision_start|>" + "<|image_pad|>" * (GRID * GRID) + "<|vision_end|>"
    question = rec_prompt(canvas.expression) if prompt == "dcsft" else canvas.expression
    text = f"{system}<|im_start|>user\n{image}{question}<|im_end|>\n<|im_start|>assistant\n"
    return text + (sft_target(canvas.box) + "<|im_end|>" if answer else "")


def encode(tokenizer, items: list[Canvas], prompt: str, answer: bool) -> dict:
    tokenizer.padding_side = "right" if answer else "left"
    texts = [chat(c, prompt, answer) for c in items]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    pixels = image_processor(DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)(images=[c.image for c in items], return_tensors="pt")
    return {**batch, **pixels}


def pretrain(model, tokenizer, train: list[Canvas], steps: int, batch: int, lr: float) -> None:
    """Stage 2: next-token loss on the answer only, every language-model weight but the (tied) embeddings trained,
    the vision tower frozen (it keeps stage 1's words); logits are computed at answer positions only."""
    model.model.get_input_embeddings().weight.requires_grad_(False)
    for param in model.model.visual.parameters():
        param.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    answer_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        inputs = encode(tokenizer, [train[(step * batch + j) % len(train)] for j in range(batch)], "bare", True)
        ids = inputs["input_ids"]
        labels = ids.masked_fill(inputs["attention_mask"] == 0, -100)
        for row in range(len(ids)):  # the answer follows the last "<|im_start|>assistant\n"
            labels[row, : (ids[row] == answer_start).nonzero()[-1].item() + 2] = -100
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model.model(**inputs).last_hidden_state[:, :-1]
            scored = labels[:, 1:] != -100
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]).float(), labels[:, 1:][scored])
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 10 == 0:
            print(f"[pretrain] step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()


@torch.no_grad()
def evaluate(model, tokenizer, test: list[Canvas], prompt: str, batch: int = 25) -> dict:
    """Greedy boxes (bf16 autocast) scored by IoU >= 0.5 against the gold box."""
    model.eval()
    ious, answers = [], []
    for i in range(0, len(test), batch):
        items = test[i : i + batch]
        inputs = encode(tokenizer, items, prompt, False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        for canvas, ids in zip(items, out[:, inputs["input_ids"].shape[1] :]):
            answers.append(tokenizer.decode(ids, skip_special_tokens=True))
            box = parse_box(answers[-1])
            ious.append(iou(box, canvas.box) if box else 0.0)
    return {
        "prompt": prompt,
        "acc": 100 * sum(v >= 0.5 for v in ious) / len(ious),
        "mean_iou": sum(ious) / len(ious),
        "distinct_answers": len(set(answers)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["align", "pretrain", "evaluate"])
    parser.add_argument("--model", required=True, help="a demo-model folder (.cache/demo/smollm2-vl or an output)")
    parser.add_argument("--out", help="folder for the trained model (align / pretrain)")
    parser.add_argument("--shapes", type=int, nargs=2, default=(2, 4), help="shapes per canvas, min max")
    parser.add_argument("--steps", type=int, default=None, help="default: 600 (align), 100 (pretrain)")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 (align), 32 (pretrain)")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 (align), 1e-4 (pretrain)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the training canvases (test canvases: 2)")
    parser.add_argument("--test", type=int, default=100, help="held-out canvases (easy-vqa test shapes)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    shapes = tuple(args.shapes)
    if args.stage != "evaluate":
        defaults = {"align": (600, 64, 1e-3), "pretrain": (100, 32, 1e-4)}[args.stage]
        steps, batch, lr = (given or default for given, default in zip((args.steps, args.batch, args.lr), defaults))
        train = probe_canvases(min(steps * batch // 2, 3000), "train", shapes, seed=args.seed)
        (align if args.stage == "align" else pretrain)(model, tokenizer, train, steps, batch, lr)
    test = probe_canvases(args.test, "test", shapes, seed=2)
    print(f"[{args.stage}] held-out token decoding (%):", decoding_accuracy(model, tokenizer, test))
    for prompt in ("bare", "dcsft"):
        print(f"[{args.stage}] held-out, {shapes[0]}-{shapes[1]} shapes:", evaluate(model, tokenizer, test, prompt))
    if args.out and args.stage != "evaluate":
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        for name in ("preprocessor_config.json", "processor_config.json", "chat_template.jinja"):
            if (Path(args.model) / name).exists():
                shutil.copy(Path(args.model) / name, Path(args.out) / name)


if __name__ == "__main__":
    main()
