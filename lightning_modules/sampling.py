"""Shared-prefill sampler: B prompts -> k completions each, encoding every image and prompt once.

Why: the official difficulty estimate runs 8 full passes of `generate` (8 prefills of every image + prompt). Here each
prompt batch is prefilled once, the KV cache is expanded item-major to B*k rows, and one decode loop samples all k
continuations; finished rows leave the cache so long answers do not hold up the batch. Equivalent in distribution to
k independent samples (same warped softmax per step); with greedy decoding each of the k answers equals plain
`generate`. Used by evaluation (k = 1, greedy), difficulty estimation (k = 8) and GRPO rollouts (k = G).

Pitfalls handled: explicit 3-D M-RoPE position ids at prefill and every decode step (so the model's
`rope_deltas` state is never used); `batch_repeat_interleave` (item-major), never tiling; `mm_token_type_ids` kept at
prefill; the left-padding attention mask grows by one column per step; vision special tokens are never sampled.
"""

from __future__ import annotations

import inspect
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from datamodules.processor import VISION_SPECIAL_TOKENS
from lightning_modules.vlm import unwrap


@dataclass
class SamplingConfig:
    """Decoding settings; the defaults are the official DC-SFT rollout settings (`infer/test_dp.py`, `grpo_lora.sh`)."""

    k: int = 8
    """Answers per prompt: the difficulty estimate's k, GRPO's group size G (official 8)."""
    max_new_tokens: int = 128
    """Longest answer in tokens (official 128)."""
    do_sample: bool = True
    """Sample (True) or decode greedily (False)."""
    temperature: float = 0.9
    """Softmax temperature (official 0.9)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (official 1.0, i.e. off)."""
    top_k: int = 50
    """Sample among the k most likely tokens (official 50, Hugging Face's default; 0 = off)."""
    seed: int = 42
    """Base seed of the per-item RNGs: an item's answers depend on (seed, item id[, step]) only."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on every token already in the prompt or the answer, as Hugging Face's
    `RepetitionPenaltyLogitsProcessor` (the paper's math evaluation: 1.1; 1.0 = off). Applies to greedy decoding
    too."""

    def problems(self) -> list[str]:
        out = []
        if self.k < 1:
            out.append(f"sampling.k must be >= 1, got {self.k}")
        if self.max_new_tokens < 1:
            out.append(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            out.append(f"sampling.temperature must be > 0 when sampling, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            out.append(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            out.append(f"sampling.top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            out.append(f"sampling.repetition_penalty must be > 0, got {self.repetition_penalty}")
        return out


def _warpers(cfg: SamplingConfig) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if cfg.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(cfg.temperature))
    if cfg.top_k and cfg.top_k > 0:
        warpers.append(TopKLogitsWarper(cfg.top_k))
    if cfg.top_p < 1.0:
        warpers.append(TopPLogitsWarper(cfg.top_p))
    return warpers


def _cache_kwarg(inner) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache`; accept both."""
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


@contextmanager
def inference_mode(model):
    """Dropout off for sampling, without `model.eval()`: on CPU, bitsandbytes repacks 4-bit weights for inference on
    `eval()`, and that packed format then breaks the training backward pass (QLoRA on CPU)."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in dropouts:
        m.training = False
    try:
        yield model
    finally:
        for m in dropouts:
            m.training = True


def _cache_of(output):
    return output.cache if "cache" in output else output.past_key_values


def stop_token_ids(processor, model) -> list[int]:
    """`<|im_end|>` and `<|endoftext|>` plus the generation config's eos ids."""
    tok = processor.tokenizer
    ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    eos = getattr(unwrap(model).generation_config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    return sorted(i for i in ids if i is not None and i >= 0)


def banned_token_ids(processor) -> list[int]:
    """Vision special tokens: sampling one would break any later forward over the sequence."""
    tok = processor.tokenizer
    return [i for i in (tok.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS) if i is not None and i >= 0]


@torch.no_grad()
def sample(
    model,
    batch: dict[str, torch.Tensor],
    cfg: SamplingConfig,
    stop_ids: list[int],
    banned_ids: list[int] | None = None,
    generators: list[torch.Generator] | None = None,
) -> list[list[list[int]]]:
    """k completions for each left-padded prompt in `batch` (ids of new tokens, the stop token included if emitted).

    Args:
        model: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model, optionally PEFT-wrapped.
        batch: `input_ids`, `attention_mask` [B, T] (left padded), optional `pixel_values`, `image_grid_thw`,
            `mm_token_type_ids`.
        cfg: k, max_new_tokens and the sampling settings (do_sample False = greedy).
        stop_ids: tokens that end a completion.
        banned_ids: tokens never sampled.
        generators: one RNG per prompt on the model's device (`item_generator`, seeded from the item id by the
            caller), so an item's samples do not depend on which batch or DDP rank it lands in; None uses the global
            RNG. Nothing vocabulary-sized leaves the device: one host sync per step (which rows stopped).

    Returns:
        out[b][j]: token ids of the j-th completion of prompt b.
    """
    hf = unwrap(model)
    inner = hf.model
    input_ids, mask = batch["input_ids"], batch["attention_mask"]  # [B, T]
    bsz, k = input_ids.shape[0], cfg.k
    mm = batch.get("mm_token_type_ids")
    if batch.get("image_grid_thw") is not None and mm is None:
        mm = (input_ids == hf.config.image_token_id).long()
    positions, next_pos = prompt_positions(hf, batch, mm)  # [3, B, T], [B]
    cache_key = _cache_kwarg(inner)
    prefill = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
    for key in ("pixel_values", "image_grid_thw"):
        if batch.get(key) is not None:
            prefill[key] = batch[key]
    if mm is not None:
        prefill["mm_token_type_ids"] = mm
    out = inner(**prefill)
    cache = _cache_of(out)
    last_hidden = out.last_hidden_state[:, -1]  # [B, H]

    # Expand item-major to B*k rows (never tile).
    cache.batch_repeat_interleave(k)
    last_hidden = last_hidden.repeat_interleave(k, 0)  # [N, H]
    mask = mask.repeat_interleave(k, 0)  # [N, T]
    next_pos = next_pos.repeat_interleave(k, 0)  # [N]
    device = input_ids.device
    rows = list(range(bsz * k))  # host copy: original row of each active row (ascending, so items are contiguous)
    rows_dev = torch.arange(bsz * k, device=device)
    buffer = torch.full((bsz * k, cfg.max_new_tokens), -1, dtype=torch.long, device=device)  # tokens stay on device
    lengths = [0] * (bsz * k)
    warpers = _warpers(cfg) if cfg.do_sample else None
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    banned = torch.tensor(banned_ids or [], dtype=torch.long, device=device)
    penalize = cfg.repetition_penalty != 1.0
    history = input_ids.repeat_interleave(k, 0) if penalize else None  # [N, T + step]: prompt (padding too, as HF)

    for step in range(cfg.max_new_tokens):
        logits = hf.lm_head(last_hidden).float()  # [N, V]
        if banned.numel():
            logits[:, banned] = float("-inf")
        if penalize:
            logits = repetition_penalty(logits, history, cfg.repetition_penalty)
        if warpers is None:
            tokens = logits.argmax(-1)  # [N]
        else:
            probs = torch.softmax(warpers(None, logits), dim=-1)  # [N, V], never leaves the device
            if generators is None:
                tokens = torch.multinomial(probs, 1).squeeze(1)
            else:
                tokens = _sample_per_item(probs, [row // k for row in rows], generators)
        buffer[rows_dev, step] = tokens
        done = torch.isin(tokens, stop).tolist()  # the one host sync of the step: N booleans
        for row in rows:  # every active row has step + 1 tokens now
            lengths[row] = step + 1
        if step == cfg.max_new_tokens - 1 or all(done):
            break
        if any(done):  # drop finished rows from the cache and every per-row tensor
            keep_list = [i for i, finished in enumerate(done) if not finished]
            keep = _index(keep_list, device)
            cache.batch_select_indices(keep)
            rows = [rows[i] for i in keep_list]
            rows_dev, tokens, mask, next_pos = rows_dev[keep], tokens[keep], mask[keep], next_pos[keep]
            history = history[keep] if penalize else None
        if penalize:
            history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [N, T+1]
        pos = next_pos.view(1, -1, 1).expand(3, -1, 1)  # [3, N, 1]
        step_out = inner(
            input_ids=tokens.unsqueeze(1), attention_mask=mask, position_ids=pos, use_cache=True, **{cache_key: cache}
        )
        cache = _cache_of(step_out)
        last_hidden = step_out.last_hidden_state[:, -1]
        next_pos = next_pos + 1
    tokens_host = buffer.tolist()  # [B*k, max_new_tokens] ids, once at the end
    results = [tokens_host[row][: lengths[row]] for row in range(bsz * k)]
    return [results[b * k : (b + 1) * k] for b in range(bsz)]


def prompt_positions(hf, batch: dict[str, torch.Tensor], mm: torch.Tensor | None = None):
    """M-RoPE positions of a left-padded prompt batch, [3, B, T], from the model's own `get_rope_index` (Qwen2.5-VL:
    image tokens share t and count h/w; Qwen3-VL: the same per-image grid, interleaved by the rotary embedding), and
    each row's first decode position, [B]: one past its largest prompt position (after an image the text resumes at
    the image's start + its largest grid side, not at the token count). Every generated token is the previous position
    + 1 on all three axes, which is what `get_rope_index` gives over the whole sequence (checked by a test)."""
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    if batch.get("image_grid_thw") is not None:
        mm = (input_ids == hf.config.image_token_id).long() if mm is None else mm
        positions, _ = hf.model.get_rope_index(
            input_ids, mm_token_type_ids=mm, image_grid_thw=batch["image_grid_thw"], attention_mask=mask
        )
    else:
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0).unsqueeze(0).expand(3, -1, -1)
    next_pos = positions.masked_fill(mask.unsqueeze(0) == 0, -1).amax(dim=(0, 2)) + 1
    return positions, next_pos


def repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive (multiply negative) logits of every token in `history` by `penalty` (Keskar et al. 2019,
    CTRL; the rule of Hugging Face's `RepetitionPenaltyLogitsProcessor`). logits [N, V], history [N, L]."""
    seen = torch.gather(logits, 1, history)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, history, seen)


def _index(values: list[int], device: torch.device) -> torch.Tensor:
    """A small index tensor on `device` (pinned and asynchronous on CUDA: no second wait per step)."""
    index = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


def sample_answers(
    model, processor, inputs: dict[str, torch.Tensor], cfg: SamplingConfig, generators=None
) -> tuple[list[list[list[int]]], list[list[str]]]:
    """`sample` with the model's stop tokens and the vision tokens banned, plus the decoded texts: (ids, texts),
    both [prompt][answer]. The one call evaluation, difficulty estimation and GRPO rollouts make."""
    stops, banned = stop_token_ids(processor, model), banned_token_ids(processor)
    ids = sample(model, inputs, cfg, stops, banned, generators)
    decode = processor.tokenizer.decode
    return ids, [[decode(c, skip_special_tokens=True) for c in item] for item in ids]


def _sample_per_item(probs: torch.Tensor, items: list[int], generators: list[torch.Generator]) -> torch.Tensor:
    """One multinomial call per item (its active rows, contiguous because rows stay item-major) with that item's RNG,
    on the probabilities' device: reproducible per item, whatever else is in the batch."""
    tokens = []
    start = 0
    while start < len(items):
        end = start
        while end < len(items) and items[end] == items[start]:
            end += 1
        tokens.append(torch.multinomial(probs[start:end], 1, generator=generators[items[start]]).squeeze(1))
        start = end
    return torch.cat(tokens)


def item_generator(seed: int, item_id: str, device: str | torch.device = "cpu") -> torch.Generator:
    """An RNG on `device` seeded from (seed, item id): reproducible whatever the batch, rank or resume point.

    CPU and CUDA generators give different draws for the same seed (different algorithms); each is reproducible on
    its own device type."""
    return torch.Generator(device=device).manual_seed(zlib.crc32(f"{seed}:{item_id}".encode()))
