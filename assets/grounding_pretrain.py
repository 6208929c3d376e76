"""The grounding demo's base model, `demo://smollm2-vl-grounding`: the demo model taught to read where a shape is.

Why: the grounding demo's cold start on `demo://smollm2-vl` answers one box for every canvas (2-4 % IoU >= 0.5).
The demo vision tower is translation-equivariant (patch convolution, relative 2-D RoPE, no absolute position
embedding), so a shape's tokens look alike wherever it is, and a 135M language model does not recover positions from
M-RoPE in a few hundred steps. Two stages (measured 2026-12-03, README "Tried on 2026-12-03") fix that:

1. `align`: the vision tower alone (as `assets/vision_alignment.py`) learns to put each merged token's cell content and
   position into word space: a token covering a shape is regressed onto the sum of the input embeddings of its
   colour, its shape, its column (" zero" ... " four") and its row (" top" ... " bottom"), a background token onto
   " background" (MSE plus, per word family, a cross-entropy over the family's words by cosine).
2. `pretrain`: the language model (all of it but the tied embeddings, vision frozen, bf16 autocast) learns boxes with
   the bare expression as the prompt (the DC-SFT prompt is what the cold start then teaches): first on one-shape
   canvases (only *where*), then on 2-4-shape canvases (*which*, too).

Canvases come from the easy-vqa train images no demo split uses; `evaluate` scores canvases of easy-vqa *test*
shapes. Prompts go through the project's one encoding path (`datamodules.collate.Encoder`). About an hour on 2 CPU
cores (cached; minutes on a GPU); `scripts/grounding_pretrain_probe.py` runs single stages for experiments.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from assets.demo_data import COLORS, SHAPES, unused_train_images
from assets.demo_model import DEMO_MAX_PIXELS, DEMO_MIN_PIXELS
from assets.grounding_demo_data import Canvas, canvases, cutouts
from assets.shape_canvas import CANVAS
from assets.vision_alignment import image_tokens, word_embedding
from datamodules.benchmarks.grounding import rec_prompt
from datamodules.collate import IGNORE_INDEX, Encoder, model_inputs
from datamodules.formats import IMAGE_MARKER, Sample
from datamodules.grounding_data import sft_target
from datamodules.scoring import iou, parse_box

CELL = 28  # px per merged image token
GRID = CANVAS // CELL
COLUMNS = ["zero", "one", "two", "three", "four"]
ROWS = ["top", "upper", "middle", "lower", "bottom"]
FAMILIES = [COLORS, SHAPES, COLUMNS, ROWS]  # a shape token carries all four, a background token only "background"
MIN_SHAPE_PIXELS = 80  # of a cell's 784, for the cell to count as that shape's
TEST_SEED = 2  # held-out canvases (easy-vqa test shapes)


@dataclass(frozen=True)
class Stage:
    """One training stage: `align` (vision tower) or `pretrain` (language model) on canvases of `shapes` shapes."""

    kind: str
    shapes: tuple[int, int]
    steps: int
    batch: int
    lr: float
    seed: int  # of the training canvases
    canvases: int  # drawn for the stage (align keeps all their pixels in memory: 0.5 MB each)


STAGES = (
    Stage("align", (2, 4), 600, 64, 1e-3, seed=1, canvases=3000),
    Stage("pretrain", (1, 1), 100, 32, 1e-4, seed=1, canvases=1600),
    Stage("pretrain", (2, 4), 550, 32, 1e-4, seed=3, canvases=8800),  # each canvas seen twice
)
RECIPE = f"stages={STAGES} min_pixels={DEMO_MIN_PIXELS} v1"  # a changed recipe rebuilds the cached asset


def stage_canvases(n: int, split: str, shapes: tuple[int, int], seed: int) -> list[Canvas]:
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


def _pixels(encoder: Encoder, items: list[Canvas]) -> dict[str, torch.Tensor]:
    return dict(encoder.processor.image_processor(images=[c.image for c in items], return_tensors="pt"))


@torch.no_grad()
def decoding_accuracy(model, encoder: Encoder, test: list[Canvas]) -> dict[str, float]:
    """Per family, the share of tokens whose nearest word (by cosine) is their cell's word (tokens that carry it)."""
    pixels = _pixels(encoder, test)
    tokens = image_tokens(model, pixels["pixel_values"], pixels["image_grid_thw"])
    gold = torch.stack([cell_labels(c) for c in test])
    logits = family_logits(tokens, family_words(model, encoder.processor.tokenizer))
    names = ("colour", "shape", "column", "row")
    return {
        n: round(100 * (lg.argmax(-1) == gold[..., f])[gold[..., f] >= 0].float().mean().item(), 1)
        for f, (n, lg) in enumerate(zip(names, logits))
    }


def _progress(tag: str, step: int, steps: int, loss: float, start: float) -> None:
    if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
        spent = time.perf_counter() - start
        eta = spent / (step + 1) * (steps - step - 1)
        print(f"[{tag}] step {step + 1}/{steps}, loss {loss:.3f}, {spent:.0f} s, ETA {eta:.0f} s", flush=True)


def _warmup(optimizer: torch.optim.Optimizer, lr: float, step: int, steps: int) -> None:
    for group in optimizer.param_groups:  # linear warm-up over the first 10 %, then constant
        group["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10))


def align(model, encoder: Encoder, train: list[Canvas], stage: Stage) -> None:
    """Stage 1: train the vision tower so each merged token matches its cell's words (MSE to their summed embeddings
    plus, per family, a cross-entropy over the family's words by cosine at temperature 0.05)."""
    candidates = family_words(model, encoder.processor.tokenizer)
    pixels = _pixels(encoder, train)
    labels = torch.stack([cell_labels(c) for c in train])
    per_image = int(pixels["image_grid_thw"][0].prod())
    visual = model.model.visual
    for param in model.parameters():
        param.requires_grad_(False)
    for param in visual.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(visual.parameters(), lr=stage.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(stage.steps):
        pick = torch.randint(0, len(train), (stage.batch,), generator=generator)
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
        _warmup(optimizer, stage.lr, step, stage.steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _progress("grounding align", step, stage.steps, loss.item(), start)
    for param in model.parameters():
        param.requires_grad_(True)


def canvas_sample(canvas: Canvas, prompt: str) -> Sample:
    """A canvas as a chat sample: the bare expression (pre-training) or the DC-SFT prompt (the cold start's), with
    the int-truncated box as the answer."""
    question = rec_prompt(canvas.expression) if prompt == "dcsft" else canvas.expression
    messages = [
        {"role": "user", "content": IMAGE_MARKER + question},
        {"role": "assistant", "content": sft_target(canvas.box)},
    ]
    return Sample(canvas.id, messages, [], solution=str(canvas.box))


def pretrain(model, encoder: Encoder, train: list[Canvas], stage: Stage) -> None:
    """Stage 2: next-token loss on the answer only, every language-model weight but the (tied) embeddings trained,
    the vision tower frozen (it keeps stage 1's words); logits are computed at answer positions only."""
    model.model.get_input_embeddings().weight.requires_grad_(False)
    for param in model.model.visual.parameters():
        param.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)
    model.train()
    start = time.perf_counter()
    for step in range(stage.steps):
        items = [train[(step * stage.batch + j) % len(train)] for j in range(stage.batch)]
        batch = encoder.collate([encoder.encode(canvas_sample(c, "bare"), images=[c.image]) for c in items], "right")
        labels = batch["labels"][:, 1:]
        scored = labels != IGNORE_INDEX
        with torch.autocast("cpu", dtype=torch.bfloat16):  # built on CPU: AMX / AVX-512 bf16, ~3x fp32
            hidden = model.model(**model_inputs(batch)).last_hidden_state[:, :-1]
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]).float(), labels[scored])
        _warmup(optimizer, stage.lr, step, stage.steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        _progress(
            f"grounding pretrain {stage.shapes[0]}-{stage.shapes[1]} shapes", step, stage.steps, loss.item(), start
        )
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()


@torch.no_grad()
def evaluate(model, encoder: Encoder, test: list[Canvas], prompt: str, batch: int = 25) -> dict:
    """Greedy boxes (bf16 autocast) scored by IoU >= 0.5 (DC-SFT IoU) against the gold box."""
    model.eval()
    tokenizer = encoder.processor.tokenizer
    ious, answers = [], []
    for i in range(0, len(test), batch):
        items = test[i : i + batch]
        inputs = encoder.prompts([canvas_sample(c, prompt) for c in items], [[c.image] for c in items])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(**model_inputs(inputs), max_new_tokens=24, do_sample=False)
        for canvas, ids in zip(items, out[:, inputs["input_ids"].shape[1] :]):
            answers.append(tokenizer.decode(ids, skip_special_tokens=True))
            box = parse_box(answers[-1])
            ious.append(iou(box, canvas.box) if box else 0.0)
    return {
        "prompt": prompt,
        "acc": round(100 * sum(v >= 0.5 for v in ious) / len(ious), 2),
        "mean_iou": round(sum(ious) / len(ious), 3),
        "distinct_answers": len(set(answers)),
    }


def run_stage(model, encoder: Encoder, stage: Stage) -> None:
    """Train one stage in place on its own freshly drawn canvases."""
    torch.manual_seed(0)
    train = stage_canvases(stage.canvases, "train", stage.shapes, stage.seed)
    (align if stage.kind == "align" else pretrain)(model, encoder, train, stage)


def build_grounding_demo_model(out_dir: str | Path, stages: tuple[Stage, ...] = STAGES, test: int = 100) -> Path:
    """Run `stages` on the demo model (`demo://smollm2-vl`), report held-out scores on `test` canvases of 2-4 test
    shapes, and save the result (fp32 safetensors + the demo processor) into out_dir."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from assets import ensure
    from assets.tiny import save_vlm_folder
    from datamodules.processor import load_processor

    base = ensure("smollm2-vl")
    encoder = Encoder(load_processor(base))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    start = time.perf_counter()
    for stage in stages:
        print(f"[demo asset] grounding pre-training: {stage}", flush=True)
        run_stage(model, encoder, stage)
    held_out = stage_canvases(test, "test", (2, 4), TEST_SEED)
    print(f"[demo asset] held-out token decoding (%): {decoding_accuracy(model, encoder, held_out)}", flush=True)
    for prompt in ("bare", "dcsft"):
        print(f"[demo asset] held-out boxes, 2-4 shapes: {evaluate(model, encoder, held_out, prompt)}", flush=True)
    print(f"[demo asset] grounding pre-training done in {time.perf_counter() - start:.0f} s", flush=True)
    return save_vlm_folder(model, encoder.processor.tokenizer, out_dir, DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)
