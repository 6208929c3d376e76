"""DifficultyRefresh: re-tiering during SFT. Every N optimizer steps, re-estimate pass rates with the model being
trained and re-apply the run's selection to them (e.g. SFT-M keeps what is medium for the model *now*).

Why: the difficulty file is one estimate from the cold-started model, while SFT keeps changing the model, so items
drift from medium to easy (learned) or stay hard. The refresh measures exactly as the difficulty stage does: k
answers per item from the shared-prefill sampler, per-item RNGs, the same scorer (`count_correct` in
`lightning_modules/difficulty.py`); sampling settings and scorer default to those recorded with the difficulty file
(`<difficulty_file>.meta.json`), so old and new pass rates are comparable. Refresh n seeds its RNGs (and its
`refresh_size` subset of the pool) from (seed, n): fresh samples each time, the same ones on a rerun. Items not
re-estimated keep their last pass rate; the data's selection (tiers, pass-rate interval, hard share, size,
variance weighting) is resolved again on the updated rates, and when it is empty or cannot be met the previous
selection stays (and the log says so).

Applying it: the datamodule serves the whole training file through a `LiveSelection`
(`datamodules/live_selection.py`): the new selection takes effect from the next batch not yet handed out, mid-epoch,
with the epoch length of the first selection (why not a dataloader reload: that module's docstring). Under DDP each
rank estimates a contiguous shard, the results and the sampler positions are gathered, and every rank applies the
same selection at the same position. The pass rates, the refresh count and the selection history are the callback's
checkpoint state, so a resumed run continues exactly. Each refresh writes `refresh_<n>.jsonl` (the difficulty-file
format, every item of the pool) and `refresh_<n>.json` (summary) atomically under `<log dir>/difficulty_refresh/`,
and logs `refresh/{easy,medium,hard}` (tier shares of the pool), `refresh/selected` (share selected),
`refresh/changed` (share of re-estimated items whose tier changed) and `refresh/seconds`.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device, rank_zero_info

from datamodules.difficulty_file import DifficultyRow, item_key, meta_path, read_difficulty, write_difficulty
from datamodules.errors import checked
from datamodules.files import atomic_write_json
from datamodules.sampler import shard
from datamodules.scoring import get_scorer
from datamodules.tiers import TIERS, apply_selection, tier_counts
from lightning_modules.difficulty import count_correct
from lightning_modules.sampling import SamplingConfig, inference_mode


def refresh_seed(seed: int, number: int) -> int:
    """The seed of refresh `number` (1, 2, ...): its per-item RNGs and its subset of the pool."""
    return zlib.crc32(f"{seed}:refresh:{number}".encode())


class DifficultyRefresh(L.Callback):
    """Re-estimate pass rates every N steps of SFT and re-select the training items (off unless configured).

    Args:
        every_n_steps: refresh every N optimizer steps (0 = never); not at the fit's last step (`trainer.max_steps`).
        refresh_size: re-estimate a seeded subset of this many pool items per refresh; None = the whole pool.
        sampling: k and decoding; None = the difficulty file's (`<difficulty_file>.meta.json`); k must be the file's.
        scorer: `exact`, `iou`, `math`, `choice`; None = the difficulty file's.
        seed: base seed of the refreshes; None = `sampling.seed`.
        batch_size: prompts per sampling batch; None = `data.eval_batch_size`.
        output_dir: where the refreshed files go; None = `<log dir>/difficulty_refresh`.
    """

    def __init__(
        self,
        every_n_steps: int = 0,
        refresh_size: int | None = None,
        sampling: SamplingConfig | None = None,
        scorer: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        output_dir: str | None = None,
    ) -> None:
        problems = [] if every_n_steps >= 0 else [f"every_n_steps must be >= 0, got {every_n_steps}"]
        problems += [
            f"{n} must be >= 1 or null"
            for n, v in (("refresh_size", refresh_size), ("batch_size", batch_size))
            if v is not None and v < 1
        ]
        problems += sampling.problems() if sampling is not None else []
        if sampling is not None and not sampling.do_sample:
            problems.append("sampling.do_sample must be true: k greedy answers are all the same")
        checked(problems, "refresh")
        self.every_n_steps, self.refresh_size, self.batch_size = every_n_steps, refresh_size, batch_size
        self.sampling, self.scorer, self.seed, self.output_dir = sampling, scorer, seed, output_dir
        self.score = get_scorer(scorer) if scorer is not None else None
        self.rows: dict[str, DifficultyRow] = {}  # current pass rate of every pool item, in pool order
        self.done = 0  # refreshes so far
        self.seconds = 0.0  # time spent re-estimating (wall time of the fit includes it)
        self.live = None
        self.tiers: dict[str, str] = {}
        self.last_summary: dict[str, Any] = {}
        self._last_step = -1
        self._pending: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.every_n_steps or self.live is not None:
            return
        dm = trainer.datamodule
        path = getattr(dm, "hparams", {}).get("difficulty_file")
        if path is None or dm.hparams.get("prompt_only"):
            raise ValueError(
                "DifficultyRefresh re-tiers SFT data: it needs data.difficulty_file and SFT (not GRPO) data"
            )
        meta = json.loads(meta_path(path).read_text(encoding="utf-8")) if meta_path(path).exists() else {}
        if self.sampling is None or self.scorer is None:
            if not meta:
                raise ValueError(f"{meta_path(path)} is missing: give refresh.init_args.sampling and scorer")
            known = {f.name for f in fields(SamplingConfig)}
            self.sampling = self.sampling or SamplingConfig(**{k: v for k, v in meta["sampling"].items() if k in known})
            self.scorer = self.scorer or meta["scorer"]
            self.score = self.score or get_scorer(self.scorer)
        self.seed = self.sampling.seed if self.seed is None else self.seed
        difficulty = read_difficulty(path)
        self.live, self.tiers = dm.live_selection(), dm.tiers  # the dataset reads `tiers` (batches carry them)
        self.rows = {
            s.id: replace(difficulty[s.id], answers=None, solution=key[0], images=key[1])
            for s in dm.pool_samples
            for key in [item_key(s.solution, s.images)]
        }
        ks = {row.k for row in self.rows.values()}
        if ks != {self.sampling.k}:
            raise ValueError(f"refresh sampling.k {self.sampling.k} differs from the difficulty file's k {sorted(ks)}")
        self.output = Path(self.output_dir or Path(trainer.log_dir or trainer.default_root_dir) / "difficulty_refresh")
        rank_zero_info(
            f"[refresh] every {self.every_n_steps} steps: {self.refresh_size or len(self.rows)} of {len(self.rows)} "
            f"items, k {self.sampling.k}, scorer {self.scorer}, selection {dm.selection.describe()}"
        )
        if self._pending is not None:
            self._restore(self._pending)

    # --------------------------------------------------------------- schedule
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.live is None or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step  # once per optimizer step, also under gradient accumulation
        if 0 < trainer.max_steps <= step:
            return  # the fit ends here: nothing would train on the new selection
        self.refresh(trainer, pl_module)

    # ---------------------------------------------------------------- refresh
    def pool_subset(self, number: int) -> list[int]:
        """Pool positions re-estimated by refresh `number`: all, or a subset seeded from (seed, number)."""
        n = len(self.rows)
        if self.refresh_size is None or self.refresh_size >= n:
            return list(range(n))
        return sorted(random.Random(refresh_seed(self.seed, number)).sample(range(n), self.refresh_size))

    def measure(self, trainer, pl_module, number: int) -> dict[str, int]:
        """This rank's contiguous shard of the refresh's items -> number correct of k."""
        dm = trainer.datamodule
        todo = self.pool_subset(number)
        part = [dm.pool_samples[todo[i]] for i in shard(len(todo), trainer.global_rank, trainer.world_size)]
        seed, out = refresh_seed(self.seed, number), {}
        with inference_mode(pl_module.model):  # dropout off; training mode untouched
            for batch in dm.prompt_dataloader(part, self.batch_size):
                batch = move_data_to_device(batch, pl_module.device)
                correct, _ = count_correct(pl_module.model, pl_module.processor, batch, self.sampling, self.score, seed)
                out.update(zip(batch["ids"], correct))
        return out

    def refresh(self, trainer, pl_module) -> dict[str, Any]:
        t0, number, dm = time.perf_counter(), self.done + 1, trainer.datamodule
        local = (self.measure(trainer, pl_module, number), self.live.cursor)
        gathered = [local]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
        measured = {item: c for part, _ in gathered for item, c in part.items()}
        epoch, position = max(cursor for _, cursor in gathered)
        changed = 0
        for item, correct in measured.items():
            old = self.rows[item]
            changed += old.tier != (new := replace(old, correct=correct, pass_rate=correct / old.k)).tier
            self.rows[item] = new
        ids, previous = list(self.rows), [self.live.ids[i] for i in self.live.selected]
        try:
            selected, kept_previous = apply_selection(ids, self.rows, dm.selection), None
        except ValueError as err:
            selected, kept_previous = previous, str(err)
        applies = None
        if selected != previous:
            batch = dm.hparams.batch_size
            start = -(-position // batch) * batch  # the next batch this rank has not drawn yet
            where = {item: i for i, item in enumerate(ids)}
            applies = self.live.apply([where[i] for i in selected], number, epoch, start, trainer.world_size)
        self.tiers.update({item: row.tier for item, row in self.rows.items()})
        self.done = number
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        self.last_summary = self.summarize(trainer, dm, number, measured, changed, selected, kept_previous, seconds)
        self.last_summary["applies_from"] = None if applies is None else {"epoch": applies[0], "position": applies[1]}
        self.report(trainer)
        return self.last_summary

    def summarize(self, trainer, dm, number, measured, changed, selected, kept_previous, seconds) -> dict[str, Any]:
        counts, n = tier_counts(self.rows), len(self.rows)
        return {
            "refresh": number,
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "seed": refresh_seed(self.seed, number),
            "measured": len(measured),
            "tiers": counts,
            "selection": dm.selection.describe(),
            "selected": len(selected),
            "kept_previous": kept_previous,
            "metrics": {
                **{f"refresh/{tier}": counts[tier] / n for tier in TIERS},
                "refresh/selected": len(selected) / n,
                "refresh/changed": changed / max(len(measured), 1),
                "refresh/seconds": seconds,
            },
            "sampling": asdict(self.sampling),
            "scorer": self.scorer,
        }

    def report(self, trainer) -> None:
        """Files (rank 0, atomic), TensorBoard scalars at this step, one log line."""
        summary, number = self.last_summary, self.last_summary["refresh"]
        if trainer.is_global_zero:
            write_difficulty(self.output / f"refresh_{number}.jsonl", self.rows)
            atomic_write_json(self.output / f"refresh_{number}.json", summary)
        for logger in trainer.loggers:
            logger.log_metrics(summary["metrics"], step=trainer.global_step)
        shares = ", ".join(f"{t} {summary['metrics'][f'refresh/{t}']:.0%}" for t in TIERS)
        kept = f"; kept the previous selection ({summary['kept_previous']})" if summary["kept_previous"] else ""
        rank_zero_info(
            f"[refresh] {number} at step {summary['step']}: {summary['measured']} items re-estimated in "
            f"{summary['metrics']['refresh/seconds']:.1f} s; pool {shares}; selection {summary['selection']}: "
            f"{summary['selected']} of {len(self.rows)} items{kept}"
        )

    # ------------------------------------------------------------ resumption
    def state_dict(self) -> dict[str, Any]:
        if self.live is None:
            return {}
        return {
            "done": self.done,
            "last_step": self._last_step,
            "seconds": self.seconds,
            "rows": [[item, row.correct, row.k] for item, row in self.rows.items()],
            "selection": self.live.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning restores callbacks after `setup`; before it (or off), the state waits."""
        if not state_dict:
            return
        if self.live is None:
            self._pending = dict(state_dict)
            return
        self._restore(state_dict)

    def _restore(self, state: dict[str, Any]) -> None:
        saved = {item: (correct, k) for item, correct, k in state["rows"]}
        if saved.keys() != self.rows.keys():
            raise ValueError("the checkpoint's refresh state is over other items than this run's training file")
        self.rows = {
            item: replace(row, correct=saved[item][0], k=saved[item][1], pass_rate=saved[item][0] / saved[item][1])
            for item, row in self.rows.items()
        }
        self.live.load_state_dict(state["selection"])
        self.tiers.update({item: row.tier for item, row in self.rows.items()})
        self.done, self._last_step, self.seconds = state["done"], state["last_step"], state["seconds"]
        self._pending = None
