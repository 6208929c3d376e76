"""Vision pre-alignment of the embedded demo model, built into its cached asset (a one-off step, minutes on 2 cores).

Why: the demo's vision tower starts random. Trained only through the cold start, it never learned to carry the image
into the language model: the first demo's models answered a real, a grey and another item's image alike, so its
ID / OOD table measured nothing. LLaVA's answer is an alignment stage (vision side trained, language model frozen),
but back-propagating through the 135M language model costs ~8 s per batch of 16 here. This stage instead regresses the
merged image tokens onto the language model's own input embeddings of the image's colour and shape words (alternating
" red", " circle", ...), with the language model out of the loop: the image tokens start out meaning, to the frozen
language model, roughly what the words mean. It trains on the 2,800 easy-vqa train images that no demo split uses,
labelled from easy-vqa's own questions (`assets/demo_data.image_labels`). The cold start then teaches the language
model (LoRA) to answer from those tokens.

    python -c "from assets import ensure; ensure('smollm2-vl')"   # builds transplant + alignment into .cache/
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class AlignmentRecipe:
    """Settings of the alignment stage (part of the asset's recipe stamp: changing one rebuilds the asset)."""

    steps: int = 900
    batch_size: int = 64
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    seed: int = 0
    ce_weight: float = 1.0  # 0 = the regression alone (the shape-blind asset of 2026-12-02)
    temperature: float = 0.05


def alignment_loss(
    tokens: torch.Tensor,
    targets: torch.Tensor,
    word_ids: torch.Tensor,
    candidates: list[torch.Tensor],
    ce_weight: float,
    temperature: float,
) -> torch.Tensor:
    """MSE to the target word embeddings plus `ce_weight` x the cross-entropy of each slot over its candidate words,
    summed over the word families.

    tokens, targets: [images, slots, hidden]; slot j carries word family j % len(candidates) (colour, shape, ...);
    word_ids: [images, len(candidates)], the right word's index in each family; candidates[f]: [words, hidden].
    """
    loss = torch.nn.functional.mse_loss(tokens, targets)
    if not ce_weight:
        return loss
    families = len(candidates)
    for family, words in enumerate(candidates):
        slots = torch.nn.functional.normalize(tokens[:, family::families], dim=-1)
        logits = slots @ torch.nn.functional.normalize(words, dim=-1).T / temperature
        gold = word_ids[:, family].repeat_interleave(slots.shape[1])
        loss = loss + ce_weight * torch.nn.functional.cross_entropy(logits.flatten(0, 1), gold)
    return loss


def word_embedding(model, tokenizer, word: str) -> torch.Tensor:
    """The language model's input embedding of " word" (mean over its tokens)."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return model.model.get_input_embeddings().weight[ids].detach().mean(0)


def image_tokens(model, pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Merged image tokens of equally sized images, [images, tokens, hidden]."""
    out = model.model.get_image_features(pixel_values, grid)
    return torch.stack(list(out.pooler_output if hasattr(out, "pooler_output") else out))


def align_vision(model, processor, images: list, labels: list[tuple[str, str]], recipe: AlignmentRecipe) -> dict:
    """Train the vision tower and merger (in place; everything else frozen) so that each image's merged tokens match
    the embeddings of its (colour, shape) words, alternating. Returns the loss at the start and end and the time.

    `images`: PIL images of one size, already resized with the processor's bounds.
    """
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    tokenizer = processor.tokenizer
    pixels = processor.image_processor(images=images, return_tensors="pt")
    pixel_values, grid = pixels["pixel_values"], pixels["image_grid_thw"]
    per_image = int(grid[0].prod())
    tokens = per_image // processor.image_processor.merge_size**2
    words = {w: word_embedding(model, tokenizer, w) for pair in labels for w in pair}
    targets = torch.stack([torch.stack([words[c], words[s]] * (tokens // 2)) for c, s in labels])  # [N, T, H]
    families = [sorted({pair[f] for pair in labels}) for f in range(2)]  # colours, shapes
    candidates = [torch.stack([words[w] for w in family]) for family in families]
    word_ids = torch.tensor([[families[f].index(pair[f]) for f in range(2)] for pair in labels])
    visual = model.model.visual
    trainable = {id(p) for p in visual.parameters()}
    for param in model.parameters():
        param.requires_grad_(id(param) in trainable)
    optimizer = torch.optim.AdamW(visual.parameters(), lr=recipe.lr, weight_decay=0.0)
    warmup = max(1, int(recipe.warmup_ratio * recipe.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(recipe.steps):
        batch = torch.randint(0, len(labels), (recipe.batch_size,), generator=generator)
        rows = torch.cat([pixel_values[i * per_image : (i + 1) * per_image] for i in batch.tolist()])
        merged = image_tokens(model, rows, grid[batch])
        loss = alignment_loss(merged, targets[batch], word_ids[batch], candidates, recipe.ce_weight, recipe.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(1, recipe.steps // 5) == 0:
            eta = (recipe.steps - step - 1) * (time.perf_counter() - start) / (step + 1)
            print(
                f"[demo asset] vision alignment step {step + 1}/{recipe.steps}, loss {loss.item():.4f}, ETA {eta:.0f} s",
                flush=True,
            )
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()
    return {
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": time.perf_counter() - start,
    }
