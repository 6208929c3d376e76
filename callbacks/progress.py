"""ProgressLog: one line per N optimizer steps with the rate and an ETA, readable in logs and non-interactive shells.

Lightning's progress bar (Rich, when installed) draws only on a terminal: piped into a file or CI it shows nothing,
and the demo's first stage ran five minutes without a sign of life. This callback prints, on rank zero,
`[fit] step 20/100 (20 %), 2.9 s/step, ETA 232 s, train/loss 1.234` every `every_n_steps` steps and a closing line.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ProgressLog(L.Callback):
    """Prints training progress every N optimizer steps.

    Args:
        every_n_steps: print every N optimizer steps (0 = never).
        only_without_terminal: stay quiet when stdout is a terminal (the progress bar shows there).
    """

    def __init__(self, every_n_steps: int = 10, only_without_terminal: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.only_without_terminal = only_without_terminal
        self._start = 0.0
        self._last_step = -1

    def _active(self) -> bool:
        return self.every_n_steps > 0 and not (self.only_without_terminal and sys.stdout.isatty())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self._active() or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        per_step = (time.perf_counter() - self._start) / max(step - self._first, 1)
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f", train/loss {float(loss):.4f}" if loss is not None else ""
        rank_zero_info(
            f"[fit] step {step}/{int(total)} ({100 * step / max(total, 1):.0f} %), {per_step:.2f} s/step, "
            f"ETA {per_step * max(total - step, 0):.0f} s{loss_text}"
        )

    def on_train_end(self, trainer, pl_module) -> None:
        if self._active():
            rank_zero_info(f"[fit] done: {trainer.global_step} steps in {time.perf_counter() - self._start:.0f} s")
