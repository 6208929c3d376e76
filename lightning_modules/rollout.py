"""GRPO rollout tensors: prompt + completion sequences and their token log-probs, vision tower run once per prompt.

Why not repeat the prompt G times through the full model: the images of a prompt are encoded once and their features
copied into the G rows (item-major), and log-probs are computed only at real completion tokens, in token chunks, so the
[rows, completion, vocab] logits never exist at once (151,665 entries per token for Qwen2.5).
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modules.vlm import unwrap


def build_sequences(batch: dict[str, Any], completions: list[list[list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts [B, P] + completions -> G rows per prompt: ids [N, P+C], masks, completion mask [N, C]."""
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]  # [B, P]
    group = len(completions[0])
    width = max(1, max(len(c) for item in completions for c in item))
    rows = [c for item in completions for c in item]  # item-major, N = B * G
    comp = torch.full((len(rows), width), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, tokens in enumerate(rows):
        comp[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        comp_mask[r, : len(tokens)] = 1
    device = prompt_ids.device
    comp, comp_mask = comp.to(device), comp_mask.to(device)
    ids = torch.cat([prompt_ids.repeat_interleave(group, 0), comp], dim=1)  # [N, P+C]
    mask = torch.cat([prompt_mask.repeat_interleave(group, 0), comp_mask], dim=1)  # [N, P+C]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "completion_mask": comp_mask,
        "prompt_len": prompt_ids.shape[1],
        "group": group,
    }


def _image_embeddings(inner, batch: dict[str, Any], group: int, with_grad: bool):
    """Image features of the B prompts, repeated G times item-major, the matching grid_thw rows, and for Qwen3-VL the
    DeepStack features (one [tokens, H] tensor per fed decoder layer, repeated the same way; None for Qwen2.5-VL)."""
    grid = batch["image_grid_thw"]
    with torch.set_grad_enabled(with_grad):
        out = inner.get_image_features(batch["pixel_values"], grid)
    per_image = list(out.pooler_output if hasattr(out, "pooler_output") else out)
    deepstack = getattr(out, "deepstack_features", None)  # Qwen3-VL: per layer, a tuple of per-image tensors
    vision_start = inner.config.vision_start_token_id
    counts = (batch["input_ids"] == vision_start).sum(1).tolist()  # images per prompt
    order, grids, start = [], [], 0  # image index of each repeated feature block
    for n in counts:
        for _ in range(group):
            order.extend(range(start, start + n))
            grids.append(grid[start : start + n])
        start += n
    feats = torch.cat([per_image[i] for i in order])
    layers = None if deepstack is None else [torch.cat([layer[i] for i in order]) for layer in deepstack]
    return feats, torch.cat(grids), layers


def sequence_logprobs(
    model,
    batch: dict[str, Any],
    seqs: dict[str, Any],
    temperature: float = 1.0,
    with_grad: bool = True,
    chunk: int = 256,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and entropies of the completions, [N, C] each (logits divided by the sampling temperature).

    Args:
        model: the policy (PEFT-wrapped or not); call under `disable_adapter()` for reference log-probs.
        batch: the prompt batch (pixel_values, image_grid_thw of the B prompts).
        seqs: `build_sequences` output.
        temperature: sampling temperature (TRL and ms-swift score completions under the same warped policy).
        with_grad: build the autograd graph (policy pass) or not (old / reference passes).
        chunk: completion tokens per lm_head chunk (bounds the [tokens, vocab] logits in memory).
        with_entropy: also compute token entropies (a full softmax); off for reference / old passes (zeros).
    """
    hf = unwrap(model)
    inner = hf.model
    ids, mask, group = seqs["input_ids"], seqs["attention_mask"], seqs["group"]
    image_id = hf.config.image_token_id
    mm = (ids == image_id).long()
    extra: dict[str, Any] = {}
    with torch.set_grad_enabled(with_grad):
        embeds = inner.get_input_embeddings()(ids)  # [N, L, H]
        grid = None
        if batch.get("pixel_values") is not None:
            vision_grad = with_grad and any(p.requires_grad for p in inner.visual.parameters())
            feats, grid, deepstack = _image_embeddings(inner, batch, group, vision_grad)
            embeds = embeds.masked_scatter((ids == image_id).unsqueeze(-1).expand_as(embeds), feats.to(embeds.dtype))
            positions, _ = inner.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid, attention_mask=mask)
            if deepstack is not None:  # Qwen3-VL adds vision features of inner ViT layers into its first LM layers
                extra["visual_pos_masks"] = ids == image_id
                extra["deepstack_visual_embeds"] = [layer.to(embeds.dtype) for layer in deepstack]
        else:
            positions = (mask.cumsum(-1) - 1).clamp(min=0).unsqueeze(0).expand(3, -1, -1)
        hidden = inner.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False, **extra
        ).last_hidden_state  # [N, L, H]
        start = seqs["prompt_len"] - 1
        targets = ids[:, seqs["prompt_len"] :]  # [N, C]
        states = hidden[:, start : start + targets.shape[1]]  # [N, C, H]
        keep = seqs["completion_mask"].bool()  # [N, C]: lm_head only on real completion tokens, never on padding
        flat_states, flat_targets = states[keep], targets[keep]  # [M, H], [M]
        logps, entropies = [], []
        for r in range(0, flat_states.shape[0], chunk):
            logits = hf.lm_head(flat_states[r : r + chunk]).float() / temperature  # [m, V]
            lse = torch.logsumexp(logits, dim=-1)  # [m]
            logps.append(logits.gather(-1, flat_targets[r : r + chunk].unsqueeze(-1)).squeeze(-1) - lse)
            if with_entropy:
                with torch.no_grad():
                    entropies.append(lse - (torch.softmax(logits, dim=-1) * logits).sum(-1))
        zeros = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
        logp = zeros.masked_scatter(keep, torch.cat(logps)) if logps else zeros  # [N, C], 0 on padding
        entropy = zeros.masked_scatter(keep, torch.cat(entropies)) if entropies else zeros
    return logp, entropy
