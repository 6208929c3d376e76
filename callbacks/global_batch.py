"""GlobalBatchSize: the optimizer's batch, fixed whatever the machine.

The paper's global batch is 16 (1 per GPU x grad-accum 2 x 8 GPUs for SFT; 16 prompts x G 8 for GRPO). A config that
fixes `accumulate_grad_batches` only gives 16 on 8 GPUs; on 1 GPU the same config would silently train at batch 2.
This callback derives the accumulation from the world size and the micro-batch at fit start, refuses a size that
does not divide, and prints the decomposition. For manual optimisation (GRPO) it sets the module's own accumulation.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


def accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient-accumulation steps so that micro_batch x world_size x steps == global_batch (else a clear error)."""
    per_step = micro_batch * world_size
    if global_batch < 1 or global_batch % per_step:
        raise ValueError(
            f"global batch {global_batch} is not a multiple of data.batch_size {micro_batch} x {world_size} "
            f"device(s) = {per_step}; change the devices, data.batch_size or global_batch.init_args.size"
        )
    return global_batch // per_step


class GlobalBatchSize(L.Callback):
    """Derive gradient accumulation from a global batch size (training samples, or prompts for GRPO).

    Args:
        size: samples (SFT) or prompts (GRPO) per optimizer step, over all devices (the paper: 16).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        micro = trainer.datamodule.hparams.batch_size
        steps = accumulation(self.size, micro, trainer.world_size)
        if pl_module.automatic_optimization:
            trainer.accumulate_grad_batches = steps
        elif hasattr(pl_module, "set_accumulation"):
            pl_module.set_accumulation(steps)
        else:
            raise ValueError(f"{type(pl_module).__name__} optimises manually and has no set_accumulation()")
        rank_zero_info(
            f"[batch] global batch {self.size} = {micro} per device x {trainer.world_size} device(s) x {steps} "
            "accumulation step(s)"
        )
