"""Prediction writer for difficulty estimation: per-rank shards, resumable, merged atomically, with a tier report.

Each rank appends its rows to `<output>.shards/rank<r>.jsonl` after every batch (flushed and fsynced), so a killed run
loses at most one batch. On restart, every id already in the shards (or in a finished output file) is skipped. When
all ranks are done, rank 0 merges the shards in training-file order into `output` (written atomically), removes the
shards, and writes the tier report: a table on stdout, `<output stem>_report.json`, and TensorBoard histogram + text.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from datamodules.difficulty_file import DifficultyRow, done_rows, shard_dir, write_difficulty
from datamodules.tier_report import format_tier_report, log_tier_report, save_tier_report, tier_report


class DifficultyWriter(BasePredictionWriter):
    """Writes difficulty rows (file format: `datamodules/difficulty_file.py`).

    Args:
        output: the difficulty JSONL to produce.
        report: print, save and log the tier report after merging.
        progress_every: print items/s and an ETA every N batches (0 = never).
    """

    def __init__(self, output: str, report: bool = True, progress_every: int = 10) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.shards = shard_dir(output)
        self.report = report
        self.progress_every = progress_every
        self._done = 0
        self._total = 0
        self._t0 = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Count what is left; the datamodule skips finished rows itself (`data.predict_done_file`, linked to
        `output` by train.py)."""
        if stage != "predict":
            return
        dm = trainer.datamodule
        linked = dm.hparams.get("predict_done_file")
        if linked is not None and Path(linked).resolve() != self.output.resolve():
            raise ValueError(
                f"data.predict_done_file {linked} is not this writer's output {self.output}; "
                "leave it unset in configs (train.py links it)"
            )
        ids = set(dm.predict_ids)
        done = done_rows(self.output).keys() & ids
        if done and linked is None:
            rank_zero_info("[difficulty] data.predict_done_file is unset: finished items are recomputed")
        self._total = len(ids) - len(done)
        if done:
            rank_zero_info(f"[difficulty] resuming: {len(done)} items already done, {self._total} to go")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if not prediction:
            return
        self.shards.mkdir(parents=True, exist_ok=True)
        with open(self.shards / f"rank{trainer.global_rank}.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in prediction))
            f.flush()
            os.fsync(f.fileno())
        self._done += len(prediction) * trainer.world_size
        if self.progress_every and (batch_idx + 1) % self.progress_every == 0:
            rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
            eta = (self._total - self._done) / max(rate, 1e-9)
            rank_zero_info(f"[difficulty] {self._done}/{self._total} items, {rate:.2f} items/s, ETA {eta:.0f} s")

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            self.merge(trainer)
        trainer.strategy.barrier()

    def merge(self, trainer) -> None:
        rows = done_rows(self.output)
        order = trainer.datamodule.predict_ids
        missing = [i for i in order if i not in rows]
        if missing:
            raise RuntimeError(
                f"difficulty estimation incomplete: {len(missing)} items missing (e.g. {missing[:3]}); "
                "run the same predict command again to finish them"
            )
        result = [
            DifficultyRow(
                id=i,
                correct=rows[i]["correct"],
                k=rows[i]["k"],
                pass_rate=rows[i]["pass_rate"],
                answers=tuple(rows[i]["answers"]) if rows[i].get("answers") is not None else None,
                solution=rows[i].get("solution"),
            )
            for i in order
        ]
        self.output.parent.mkdir(parents=True, exist_ok=True)
        write_difficulty(self.output, result)
        for shard in self.shards.glob("*.jsonl") if self.shards.exists() else []:
            shard.unlink()
        if self.shards.exists():
            self.shards.rmdir()
        rank_zero_info(f"[difficulty] wrote {len(result)} rows to {self.output}")
        if self.report:
            self.write_report(trainer, {r.id: r for r in result})

    def write_report(self, trainer, difficulty: dict[str, DifficultyRow]) -> dict[str, Any]:
        report = tier_report(difficulty)
        print(format_tier_report(report), flush=True)
        save_tier_report(report, self.output.with_name(self.output.stem + "_report.json"))
        writer = getattr(trainer.logger, "experiment", None) if trainer.logger else None
        log_tier_report(writer, report, difficulty, trainer.global_step)
        return report
