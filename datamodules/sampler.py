"""A seeded, shardable, resumable sampler.

Why not Lightning's DistributedSampler injection: a resumed run must continue the same epoch's order from the batch
after the last checkpoint. This sampler shuffles with `seed + epoch`, shards the permutation across ranks itself
(pad by wrap-around, then `rank::world_size`, like DistributedSampler), and skips the first `start` indices of its
shard once, after a resume. Configs therefore set `trainer.use_distributed_sampler: false`. The skip belongs to the
resumed epoch (`resume`): a checkpoint taken at an epoch's last batch resumes in the next epoch, which Lightning
starts with `set_epoch(e + 1)`, and that epoch must start from its first index, not skip the finished one's count.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded by rank, with a one-shot skip for mid-epoch resume."""

    def __init__(self, size: int, seed: int = 42, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.start_epoch: int | None = None  # the epoch `start` belongs to (None: whichever is iterated first)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start."""
        self.epoch = epoch

    def resume(self, epoch: int, start: int) -> None:
        """Continue `epoch` after its first `start` indices (if Lightning iterates that epoch next)."""
        self.set_epoch(epoch)
        self.start, self.start_epoch = start, epoch

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for an epoch (no skip applied)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            indices = torch.randperm(self.size, generator=gen).tolist()
        else:
            indices = list(range(self.size))
        total = -(-self.size // self.world_size) * self.world_size
        indices += indices[: total - self.size]
        return indices[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        indices = self.order(self.epoch)[resumed_start(self) :]
        return iter(indices)

    def __len__(self) -> int:
        return -(-self.size // self.world_size)


def resumed_start(sampler) -> int:
    """A sampler's one-shot skip for the epoch being iterated now (0 for any other epoch), then cleared."""
    start = sampler.start if sampler.start_epoch in (None, sampler.epoch) else 0
    sampler.start, sampler.start_epoch = 0, None
    return start


def shard(n: int, rank: int, world: int) -> range:
    """Contiguous split; the last rank takes the remainder (official `test_dp.py`)."""
    per = n // world
    return range(rank * per, n if rank == world - 1 else (rank + 1) * per)
