"""Group filtering for GRPO (DAPO's dynamic sampling, arXiv 2503.14476): train only on groups with reward spread.

A group whose G rewards are all equal has zero advantage, so it adds nothing to the policy gradient but still dilutes
the batch mean and (with beta > 0) pulls towards the reference. With the filter on, such groups are dropped and the
batch is refilled with fresh prompts. Off by default: the paper's GRPO, which trains on every group, stays the
baseline.

Refill source (a documented choice): Lightning's own batch iterator is not touched; pulling extra batches from it
inside a manual-optimisation step would shift the resumable data order (`datamodules/sampler.py` resumes from the
number of batches Lightning counted). Refill prompts are instead drawn at random from the same training dataset
through the train dataloader's own collate function, by a permutation seeded from (seed, step, round) and sharded
by rank like the main sampler (ranks never draw the same item in a round). It holds no state, so a resumed run
draws the same refills, and the main epoch order is unchanged.

DDP: a rank keeps at most its configured batch of groups. Rounds continue while *any* rank is short (the shortfall
is all-reduced every round), so every rank runs the same number of rounds and the same collectives; a rank that is
already full takes part without sampling. Every rank then makes exactly the optimizer steps of plain GRPO.

Pure parts here (no model, no trainer): `keep_groups`, `fill_groups`, `refill_indices`, slicing and merging of prompt
batches (`take_rows`, `concat_prompt_batches`) and of their rollouts (`take_groups`, `concat_groups`, `drawn_groups`). Tests: `pytest tests/test_grpo_filter.py`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IMAGE_KEYS = ("pixel_values", "image_grid_thw")


@dataclass
class GroupFilter:
    """Which GRPO groups to train on (off by default: the paper trains on all of them)."""

    enabled: bool = False
    """Drop groups without reward spread and refill the batch with fresh prompts."""
    min_std: float = 0.0
    """Keep a group only if its rewards differ and their (unbiased) std exceeds this; 0 keeps every group that is
    neither all right nor all wrong (binary rewards: 0 < mean < 1)."""
    max_resample: int = 0
    """Refill rounds per step at most; after them the step trains on the groups it has (and says so)."""

    def problems(self) -> list[str]:
        out = []
        if self.min_std < 0:
            out.append(f"group_filter.min_std must be >= 0, got {self.min_std}")
        if self.max_resample < 0:
            out.append(f"group_filter.max_resample must be >= 0, got {self.max_resample}")
        return out


def keep_groups(rewards: Tensor, min_std: float = 0.0) -> Tensor:
    """Groups with reward spread: rewards differ (exact test, so float sums of equal rewards never count as spread)
    and their unbiased std (as in `group_advantages`) exceeds `min_std`.

    Args:
        rewards: rewards, shape ``[B, G]``.
        min_std: threshold on the group std.

    Returns:
        Boolean mask, shape ``[B]``.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    rewards = rewards.detach().float()
    differ = rewards.amax(dim=1) > rewards.amin(dim=1)  # [B]
    if rewards.shape[1] < 2:
        return torch.zeros_like(differ)
    return differ & (rewards.std(dim=1) > min_std)  # [B]


@dataclass
class FillResult:
    """What `fill_groups` kept: (round, row) pairs in the order kept, the rounds run and each round's keep mask."""

    kept: list[tuple[int, int]] = field(default_factory=list)
    rounds: int = 0
    masks: dict[int, Tensor] = field(default_factory=dict)


def fill_groups(
    draw: Callable[[int], Tensor],
    target: int,
    min_std: float = 0.0,
    max_resample: int = 0,
    global_shortfall: Callable[[int], int] = lambda short: short,
) -> FillResult:
    """Draw round 0, keep the groups with spread, and refill while short, for at most `max_resample` rounds.

    Args:
        draw: round -> rewards ``[B, G]`` of that round's fresh prompts (called only on a rank that is still short).
        target: groups wanted on this rank (the configured batch).
        min_std: see `keep_groups`.
        max_resample: refill rounds at most.
        global_shortfall: this rank's shortfall -> the largest over all ranks (an all-reduce under DDP), so every
            rank runs the same rounds; called once per potential refill round on every rank.

    Returns:
        A `FillResult` with at most `target` kept groups.
    """
    result = FillResult()
    for round_ in range(max_resample + 1):
        if round_ > 0:
            if global_shortfall(target - len(result.kept)) <= 0:
                break
            result.rounds = round_
        short = target - len(result.kept)
        if short <= 0:
            continue  # full here, short elsewhere: take part in the round without sampling
        mask = keep_groups(draw(round_), min_std)
        result.masks[round_] = mask
        rows = mask.nonzero().flatten().tolist()[:short]
        result.kept += [(round_, row) for row in rows]
    return result


def refill_indices(
    n_items: int,
    size: int,
    seed: int,
    step: int,
    round_: int,
    rank: int,
    world: int,
    exclude: Collection[int] = (),
) -> list[int]:
    """Dataset indices of one refill batch: a permutation seeded by (seed, step, round), padded by wrap-around and
    sharded by rank as the main sampler does, without the items this rank already drew this step (`exclude`), and
    its first `size` entries (repeated only when the shard has fewer fresh items)."""
    if n_items < 1 or size < 1:
        raise ValueError(f"need n_items >= 1 and size >= 1, got {n_items}, {size}")
    gen = torch.Generator().manual_seed(zlib.crc32(f"grpo-refill/{seed}/{step}/{round_}".encode()))
    order = torch.randperm(n_items, generator=gen).tolist()
    total = -(-n_items // world) * world
    order += (order * (total // n_items + 1))[: total - n_items]
    mine = order[rank::world]
    fresh = [i for i in mine if i not in exclude] or mine
    return (fresh * (size // len(fresh) + 1))[:size]


def _images_per_item(batch: dict[str, Any]) -> list[int]:
    """Images of each row: runs of image tokens in `mm_token_type_ids` (each image is one run between the vision
    start and end tokens)."""
    mm = batch["mm_token_type_ids"].bool()  # [B, P]
    starts = mm.clone()
    starts[:, 1:] &= ~mm[:, :-1]
    counts = starts.sum(1).tolist()
    if sum(counts) != batch["image_grid_thw"].shape[0]:
        raise ValueError(f"{sum(counts)} image-token runs but {batch['image_grid_thw'].shape[0]} image grids")
    return counts


def take_rows(batch: dict[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """The items `rows` of a collated prompt batch: row tensors and per-item lists indexed, and their images'
    patches (`pixel_values`) and grids kept."""
    n, rows = len(batch["ids"]), list(rows)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key in IMAGE_KEYS:
            continue
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value[torch.tensor(rows, dtype=torch.long, device=value.device)]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[r] for r in rows]
        else:
            out[key] = value
    if batch.get("pixel_values") is not None:
        grid = batch["image_grid_thw"]
        patches = grid.prod(-1).tolist()  # per image
        per_item = _images_per_item(batch)
        first_image = [sum(per_item[:r]) for r in range(n)]
        first_patch = [sum(patches[:i]) for i in range(len(patches))]
        images = [i for r in rows for i in range(first_image[r], first_image[r] + per_item[r])]
        out["image_grid_thw"] = grid[images]
        pieces = [batch["pixel_values"][first_patch[i] : first_patch[i] + patches[i]] for i in images]
        out["pixel_values"] = torch.cat(pieces) if pieces else batch["pixel_values"][:0]
    return out


def concat_prompt_batches(batches: Sequence[dict[str, Any]], pad_values: dict[str, int]) -> dict[str, Any]:
    """Left-padded prompt batches -> one batch: 2-D row tensors left-padded to the widest (`pad_values[key]`, else 0),
    leading all-padding columns dropped, lists and images concatenated."""
    if len(batches) == 1:
        return dict(batches[0])
    first, out, padded_keys = batches[0], {}, []
    width = max(b["attention_mask"].shape[1] for b in batches)
    for key, value in first.items():
        if key in IMAGE_KEYS:
            continue
        if isinstance(value, Tensor) and value.dim() == 2 and value.shape[0] == len(first["ids"]):
            padded = []
            for b in batches:
                t = b[key]
                pad = torch.full((t.shape[0], width - t.shape[1]), pad_values.get(key, 0), dtype=t.dtype)
                padded.append(torch.cat([pad.to(t.device), t], dim=1))
            out[key] = torch.cat(padded)
            padded_keys.append(key)
        elif isinstance(value, list) and len(value) == len(first["ids"]):
            out[key] = [x for b in batches for x in b[key]]
        else:
            out[key] = value
    used = out["attention_mask"].bool().any(0).nonzero()
    start = int(used.min()) if used.numel() else 0
    for key in padded_keys:
        out[key] = out[key][:, start:]
    with_images = [b for b in batches if b.get("pixel_values") is not None]
    if with_images:
        out["pixel_values"] = torch.cat([b["pixel_values"] for b in with_images])
        out["image_grid_thw"] = torch.cat([b["image_grid_thw"] for b in with_images])
    return out


def take_groups(rollout: dict[str, Any], rows: Sequence[int], k: int) -> dict[str, Any]:
    """The groups of prompts `rows` of a rollout (`texts`, `completions` per prompt; `rewards`, `correct` [B*G])."""
    index = torch.tensor(list(rows), dtype=torch.long, device=rollout["rewards"].device)
    return {
        "texts": [rollout["texts"][r] for r in rows],
        "completions": [rollout["completions"][r] for r in rows],
        "rewards": rollout["rewards"].view(-1, k)[index].reshape(-1),
        "correct": rollout["correct"].view(-1, k)[index].reshape(-1),
    }


def concat_groups(rollouts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rollouts one after the other, in the order of `concat_prompt_batches`."""
    return {
        "texts": [t for ro in rollouts for t in ro["texts"]],
        "completions": [c for ro in rollouts for c in ro["completions"]],
        "rewards": torch.cat([ro["rewards"] for ro in rollouts]),
        "correct": torch.cat([ro["correct"] for ro in rollouts]),
    }


def drawn_groups(draws: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Every group of (prompt batch, rollout) pairs: per-prompt fields (None where a batch lacks one), answers,
    rewards and verdicts, for the metrics and the rollout log."""
    out: dict[str, Any] = {
        key: [x for b, _ in draws for x in b.get(key) or [None] * len(b["ids"])]
        for key in ("ids", "solutions", "tiers", "image_files")
    }
    out.update({key: value for key, value in concat_groups([ro for _, ro in draws]).items() if key != "completions"})
    return out
