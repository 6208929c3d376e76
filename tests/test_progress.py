"""ProgressLog: a line with rate and ETA every N optimizer steps, for logs where no progress bar draws."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from callbacks.progress import ProgressLog


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_lines_every_n_steps_with_eta():
    log = ProgressLog(every_n_steps=2, only_without_terminal=False)
    trainer = SimpleNamespace(global_step=0, max_steps=6, estimated_stepping_batches=99, callback_metrics={})
    handler, logger = Lines(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log.on_train_start(trainer, None)
    for step in range(1, 7):
        trainer.global_step = step
        trainer.callback_metrics = {"train/loss": torch.tensor(1.0 / step)}
        log.on_train_batch_end(trainer, None, None, None, step)
        log.on_train_batch_end(trainer, None, None, None, step)  # accumulation: same optimizer step, no repeat
    log.on_train_end(trainer, None)
    logger.removeHandler(handler)
    lines = [line for line in handler.lines if line.startswith("[fit]")]
    heads = [line.split(",")[0] for line in lines[:3]]
    assert heads == ["[fit] step 2/6 (33 %)", "[fit] step 4/6 (67 %)", "[fit] step 6/6 (100 %)"]
    assert "ETA 0 s, train/loss 0.1667" in lines[2] and lines[3].startswith("[fit] done: 6 steps")


def test_quiet_when_off():
    log = ProgressLog(every_n_steps=0)
    assert not log._active()
