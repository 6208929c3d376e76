"""Test utilities shared by the test files: a quiet CPU trainer, simulated crashes, prompt batches."""

from __future__ import annotations

from typing import Any

import lightning as L


def cpu_trainer(**kwargs) -> L.Trainer:
    """A quiet CPU Trainer for tests: no logger, checkpoints, progress bar, summary or sanity check."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


class Killed(Exception):
    """Stands in for kill -9 in tests: raised by the callbacks below."""


class KillAtStep(L.Callback):
    """Crashes right before training step `step` starts (the checkpoint of the previous step exists)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed


class KillAfterPredictBatches(L.Callback):
    """Crashes after `batches` predict batches (their rows are already written)."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx + 1 == self.batches:
            raise Killed


def prompt_batch(model_path: str, data, n: int = 2) -> dict[str, Any]:
    """The first left-padded prompt batch (no answers) of an official-format file, unshuffled."""
    from datamodules.vlm_data import VLMDataModule

    dm = VLMDataModule(model_path, train_file=str(data), batch_size=n, prompt_only=True, shuffle=False)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))
