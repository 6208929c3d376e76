"""Prediction writer for difficulty estimation: per-rank shards, resumable, merged atomically, with a tier report.

Each rank appends its rows to `<output>.shards/rank<r>.jsonl` after every batch (flushed and fsynced), so a killed run
loses at most one batch; a line cut by the kill is trimmed on restart. When all ranks are done, rank 0 merges the
shards in data-file order into `output` (written atomically), removes the shards, and writes the tier report: a table
on stdout, `<output stem>_report.json`, and TensorBoard histogram + text.

Nothing stale is reused and nothing computed is lost: every output and shard folder carries a fingerprint (the
model's path and content hash, the sampling settings, the scorer, and the predict file's ids, answers and image
names). A rerun resumes only when the fingerprint matches; otherwise it refuses, names what changed and how to start
fresh (`overwrite: true`, or another `output`). A lock file refuses a second run writing the same output.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from datamodules.difficulty_file import (
    DifficultyRow,
    checkpoint_identity,
    done_rows,
    fingerprint_differences,
    item_key,
    items_digest,
    meta_path,
    shard_dir,
    write_difficulty,
)
from datamodules.files import atomic_write_json
from datamodules.tier_report import format_tier_report, log_tier_report, save_tier_report, tier_report

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs are then not detected
    fcntl = None


class DifficultyWriter(BasePredictionWriter):
    """Writes difficulty rows (file format: `datamodules/difficulty_file.py`).

    Args:
        output: the difficulty JSONL to produce.
        report: print, save and log the tier report after merging.
        progress_every: print items/s and an ETA every N batches (0 = never).
        overwrite: discard an earlier output or unfinished shards computed with other settings, model or data
            (default: refuse and say what differs).
    """

    def __init__(self, output: str, report: bool = True, progress_every: int = 10, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.shards = shard_dir(output)
        self.report = report
        self.progress_every = progress_every
        self.overwrite = overwrite
        self.fingerprint: dict[str, Any] = {}
        self._lock = None
        self._done = 0
        self._total = 0
        self._t0 = 0.0

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the output before any sampling: writable, not in use, and resumable only with the same fingerprint.
        The datamodule skips finished rows itself (`data.predict_done_file`, linked to `output` by train.py)."""
        if stage != "predict":
            return
        dm = trainer.datamodule
        linked = dm.hparams.get("predict_done_file")
        if linked is not None and Path(linked).resolve() != self.output.resolve():
            raise ValueError(
                f"data.predict_done_file {linked} is not this writer's output {self.output}; "
                "leave it unset in configs (train.py links it)"
            )
        problem = None
        if trainer.is_global_zero:  # only rank 0 reads or writes fingerprints and merges
            try:
                self.fingerprint = self.make_fingerprint(pl_module, dm)
                self._acquire_lock()
                self._check_resumable()
                self._repair_shards()
            except (ValueError, OSError) as err:
                problem = str(err)
        problem = trainer.strategy.broadcast(problem, src=0)
        if problem:
            raise ValueError(problem)
        trainer.strategy.barrier()
        ids = set(dm.predict_ids)
        done = done_rows(self.output).keys() & ids
        self._total = len(ids) - len(done)
        if done:
            rank_zero_info(f"[difficulty] resuming: {len(done)} items already done, {self._total} to go")
            if linked is None:
                rank_zero_info("[difficulty] data.predict_done_file is unset: finished items are recomputed")

    @staticmethod
    def make_fingerprint(pl_module: L.LightningModule, dm) -> dict[str, Any]:
        """What the estimate depends on: model (path + content hash), sampling, scorer, and the items."""
        samples = dm.predict_samples
        return {
            "model": checkpoint_identity(pl_module.hparams.model_path, pl_module.vlm.adapter_path),
            "sampling": asdict(pl_module.sampling),
            "scorer": pl_module.hparams.scorer,
            "items": items_digest((s.id, *item_key(s.solution, s.images)) for s in samples),
            "n_items": len(samples),
        }

    def _acquire_lock(self) -> None:
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            handle = open(f"{self.output}.lock", "w")  # noqa: SIM115 (held until the run ends)
        except OSError as err:
            raise OSError(
                f"difficulty output {self.output} is not writable ({err.strerror}); choose another output"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ValueError(
                    f"another run is writing {self.output} right now (lock {self.output}.lock); wait for it to "
                    "finish, or write elsewhere with --difficulty.init_args.output"
                ) from None
        self._lock = handle

    def _check_resumable(self) -> None:
        """Resume only what this fingerprint computed; discard it on `overwrite`, refuse otherwise."""
        for where, meta in ((self.shards, self.shards / "meta.json"), (self.output, meta_path(self.output))):
            if not where.exists():
                continue
            old = json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else None
            differences = ["no fingerprint (written before fingerprints)"] if old is None else []
            differences += fingerprint_differences(old, self.fingerprint) if old is not None else []
            if not differences:
                continue
            if self.overwrite:
                rank_zero_info(f"[difficulty] overwrite: discarding {where} ({'; '.join(differences)})")
                self._discard()
                return
            raise ValueError(
                f"{where} was computed with other settings, model or data:\n  - "
                + "\n  - ".join(differences)
                + f"\nTo start fresh, add --difficulty.init_args.overwrite true (deletes {self.output} and its "
                "shards), or write elsewhere with --difficulty.init_args.output NEW.jsonl."
            )
        if not self.output.exists():
            self.shards.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.shards / "meta.json", self.fingerprint)

    def _discard(self) -> None:
        shutil.rmtree(self.shards, ignore_errors=True)
        for path in (self.output, meta_path(self.output), self.output.with_name(self.output.stem + "_report.json")):
            path.unlink(missing_ok=True)
        self.shards.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.shards / "meta.json", self.fingerprint)

    def _repair_shards(self) -> None:
        """Trim a last line cut by a kill, so the next append starts on a fresh line (that item is redone)."""
        for shard in sorted(self.shards.glob("rank*.jsonl")) if self.shards.exists() else []:
            data = shard.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(shard, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)

    # ---------------------------------------------------------------- writing
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
        self.teardown(trainer, pl_module, "predict")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "predict")  # a crashed run must not keep the output locked

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._lock is not None:
            self._lock.close()
            Path(f"{self.output}.lock").unlink(missing_ok=True)
            self._lock = None

    def merge(self, trainer) -> None:
        rows = done_rows(self.output)
        order = trainer.datamodule.predict_ids
        missing = [i for i in order if i not in rows]
        if missing:
            raise RuntimeError(
                f"difficulty estimation incomplete: {len(missing)} items missing (e.g. {missing[:3]}); "
                "run the same predict command again to finish them"
            )
        result = [DifficultyRow.from_json(rows[i]) for i in order]
        write_difficulty(self.output, result)
        atomic_write_json(meta_path(self.output), self.fingerprint)
        shutil.rmtree(self.shards, ignore_errors=True)
        rank_zero_info(f"[difficulty] wrote {len(result)} rows to {self.output}")
        if self.report:
            self.write_report(trainer, {r.id: r for r in result})

    def write_report(self, trainer, difficulty: dict[str, DifficultyRow]) -> dict[str, Any]:
        report = tier_report(difficulty, noisy=set(getattr(trainer.datamodule, "noisy", {})))
        print(format_tier_report(report), flush=True)
        save_tier_report(report, self.output.with_name(self.output.stem + "_report.json"))
        writer = getattr(trainer.logger, "experiment", None) if trainer.logger else None
        log_tier_report(writer, report, difficulty, trainer.global_step)
        return report
