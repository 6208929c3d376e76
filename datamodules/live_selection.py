"""A training selection that may change during a fit, and the sampler that serves it (re-tiering during SFT).

Why not reload the dataloader: Lightning reloads training dataloaders only at epoch boundaries
(`reload_dataloaders_every_n_epochs`), and an epoch of a paper-sized selection is thousands of steps, so a refresh
every N steps would wait for the epoch end. Here the dataset is the whole training pool and the sampler reads the
selection lazily, position by position, so a new selection takes effect mid-epoch without touching Lightning:

- An epoch keeps the length of the fit's first selection (`size` items, sharded by rank), so the number of batches
  per epoch that Lightning counted at setup, the step schedule, per-epoch evaluation and the resume arithmetic
  (`batches x batch_size`) stay those of a static run; with no refresh the order is `ResumableSampler`'s exactly.
- A selection is a `Segment` that applies from a per-rank position of an epoch on, never to a position already
  handed out (the sampler records how far it got, `cursor`; DataLoader prefetching is therefore harmless). Positions
  from there draw from a seeded permutation of the new selection, cycled and sharded like the first (`seed + epoch`
  for a segment that starts an epoch, (seed, epoch, tag) mid-epoch); later epochs draw from the last selection.
- The segments are the state: saved in the checkpoint, they reproduce the order after a resume exactly. Under DDP
  every rank applies the same segment at the same position (the refresh gathers the positions first).
Tests: `pytest tests/test_difficulty_refresh.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from datamodules.sampler import resumed_start

MID_EPOCH_SEED = 1_000_003  # separates a mid-epoch segment's permutation from every epoch's own


@dataclass
class Segment:
    """`indices` (pool positions, ascending) are served from per-rank `start` of `epoch` on."""

    epoch: int
    start: int
    tag: int  # -1: the fit's first selection; n: refresh n
    indices: list[int]


class LiveSelection:
    """The pool's ids and the history of selections that matters for the current epoch on; shared by the sampler
    (which reads it lazily) and the callback that changes it."""

    def __init__(self, ids: list[str], selected: list[int], seed: int = 42, shuffle: bool = True) -> None:
        if not selected:
            raise ValueError("a live selection needs at least one selected item")
        self.ids = list(ids)
        self.size = len(selected)  # items per epoch, for the whole fit
        self.seed, self.shuffle = seed, shuffle
        self.segments = [Segment(0, 0, -1, sorted(selected))]
        self.cursor = (0, 0)  # (epoch, per-rank position) this process's sampler has handed out up to
        self._perms: dict[tuple[int, int], list[int]] = {}

    @property
    def selected(self) -> list[int]:
        """The newest selection (pool positions)."""
        return self.segments[-1].indices

    def length(self, world_size: int) -> int:
        """Positions per rank and epoch."""
        return -(-self.size // world_size)

    def apply(self, indices: list[int], tag: int, epoch: int, position: int, world_size: int) -> tuple[int, int]:
        """Serve `indices` from `position` of `epoch` on (the next epoch when the position is past this one's end);
        returns where it applies. Positions before it keep their items."""
        if not indices:
            raise ValueError("a selection must keep at least one item")
        if (epoch, position) < self.cursor:
            raise ValueError(f"position {(epoch, position)} was already handed out (cursor {self.cursor})")
        if position >= self.length(world_size):
            epoch, position = epoch + 1, 0
        while self.segments and (self.segments[-1].epoch, self.segments[-1].start) >= (epoch, position):
            self.segments.pop()  # replaced before it served anything
        self.segments.append(Segment(epoch, position, tag, sorted(indices)))
        self._perms.clear()
        return epoch, position

    def prune(self, epoch: int) -> None:
        """Forget segments that no position of `epoch` or later can reach (keeps the checkpoint state small)."""
        first = max((i for i, s in enumerate(self.segments) if (s.epoch, s.start) <= (epoch, 0)), default=0)
        if first:
            self.segments = self.segments[first:]
            self._perms.clear()

    def index(self, epoch: int, position: int, rank: int, world_size: int) -> int:
        """The pool position served at `position` of `epoch` on `rank`."""
        at = max(i for i, s in enumerate(self.segments) if (s.epoch, s.start) <= (epoch, position))
        segment = self.segments[at]
        base = segment.start if segment.epoch == epoch else 0
        order = self._order(at, epoch, base)
        return segment.indices[order[((position - base) * world_size + rank) % len(order)]]

    def _order(self, at: int, epoch: int, base: int) -> list[int]:
        """A permutation of segment `at`'s items for `epoch` (cycled by the caller: the wrap-around padding)."""
        key = (at, epoch)
        if key not in self._perms:
            n = len(self.segments[at].indices)
            if self.shuffle:
                seed = self.seed + epoch + (MID_EPOCH_SEED * (self.segments[at].tag + 1) if base else 0)
                self._perms[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            else:
                self._perms[key] = list(range(n))
        return self._perms[key]

    # ------------------------------------------------------------ resumption
    def state_dict(self) -> dict[str, Any]:
        return {"n_pool": len(self.ids), "size": self.size, "segments": [asdict(s) for s in self.segments]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_pool"] != len(self.ids) or state["size"] != self.size:
            raise ValueError(
                f"the checkpoint's live selection is over {state['n_pool']} items with {state['size']} per epoch, "
                f"this run's over {len(self.ids)} with {self.size}: resume with the same training file and selection"
            )
        self.segments = [Segment(**s) for s in state["segments"]]
        self._perms.clear()


class LiveSampler(Sampler[int]):
    """`ResumableSampler`'s interface (`set_epoch`, one-shot `start`) over a `LiveSelection` of the whole pool."""

    def __init__(self, live: LiveSelection, rank: int = 0, world_size: int = 1) -> None:
        self.live, self.rank, self.world_size = live, rank, world_size
        self.epoch = 0
        self.start = 0
        self.start_epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start."""
        self.epoch = epoch
        self.live.prune(epoch)

    def resume(self, epoch: int, start: int) -> None:
        """Continue `epoch` after its first `start` positions (if Lightning iterates that epoch next)."""
        self.set_epoch(epoch)
        self.start, self.start_epoch = start, epoch

    def __iter__(self) -> Iterator[int]:
        epoch, start = self.epoch, resumed_start(self)
        self.live.cursor = (epoch, start)
        for position in range(start, len(self)):
            index = self.live.index(epoch, position, self.rank, self.world_size)
            self.live.cursor = (epoch, position + 1)  # handed out: a later selection starts after it
            yield index

    def __len__(self) -> int:
        return self.live.length(self.world_size)
