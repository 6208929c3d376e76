"""What the training modules share, as functions and small objects (no base class): the AdamW + warmup-cosine
optimiser, checkpoints trimmed to trainable weights, RNG state for exact resume, and export of a merged model.

Defaults are ms-swift's, which the official DC-SFT scripts run with (github.com/byyx666/DC-SFT,
`examples/train/*.sh`): AdamW, weight decay 0.1, betas (0.9, 0.95), warmup ratio 0.1, cosine decay.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from datamodules.files import check_writable


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay (transformers' `get_cosine_schedule_with_warmup`)."""

    lr: float = 1e-5
    """Peak learning rate (official DC-SFT: 1e-5)."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (biases and norms get none); ms-swift default 0.1."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas; ms-swift default (0.9, 0.95)."""
    warmup_ratio: float = 0.1
    """Share of the optimizer steps with linear warmup (official 0.1)."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine decay, as a share of `lr`."""
    vision_lr_scale: float = 1.0
    """Learning-rate multiplier for vision-tower and merger parameters (1.0 = official)."""

    def problems(self) -> list[str]:
        out = []
        if self.lr < 0:
            out.append(f"optim.lr must be >= 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            out.append(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.vision_lr_scale < 0:
            out.append(f"optim.vision_lr_scale must be >= 0, got {self.vision_lr_scale}")
        return out


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` (transformers' cosine schedule)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def configure_adamw(module: L.LightningModule, cfg: OptimConfig) -> dict[str, Any]:
    """`configure_optimizers` output: AdamW over the trainable parameters, grouped by decay and vision / language,
    with a per-step warmup-cosine schedule over `trainer.estimated_stepping_batches`."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("no trainable parameters: enable lora or unfreeze part of the model")
    groups = []
    for is_vision in (False, True):
        for decay in (True, False):
            params = [p for n, p in named if (".visual." in n) == is_vision and (p.ndim >= 2) == decay]
            if params:
                lr = cfg.lr * (cfg.vision_lr_scale if is_vision else 1.0)
                groups.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas))
    total = max(1, int(module.trainer.estimated_stepping_batches))
    warmup = int(cfg.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total, warmup, cfg.min_lr_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def keep_trainable(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Trim a Lightning checkpoint to the trainable weights (the frozen base reloads from `model_path`)."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


class RNGResume:
    """Torch RNG state saved with each checkpoint and restored at the first resumed batch (not at load time:
    Lightning's loader setup draws from the RNG after loading), so dropout and sampling continue exactly."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def save(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state()}

    def load(self, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get("rng")

    def restore_pending(self) -> None:
        if self._pending is not None:
            torch.set_rng_state(self._pending["torch"])
            self._pending = None


# Lightning hooks that SFT and GRPO share, written once and assigned in each class body (`on_save_checkpoint =
# save_trainable_hook`), so the modules stay plain LightningModules without a common base class. They expect the
# module's `model`, `processor`, `rng` (RNGResume), `optim` (OptimConfig), `configure_model()` and
# `hparams.export_dir`.
def optimizers_hook(module: L.LightningModule) -> dict[str, Any]:
    """`configure_optimizers`: AdamW + warmup-cosine over the trainable parameters."""
    return configure_adamw(module, module.optim)


def save_trainable_hook(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_save_checkpoint`: trainable weights and the RNG state only."""
    keep_trainable(module, checkpoint)
    module.rng.save(checkpoint)


def load_trainable_hook(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_load_checkpoint`: build the base model first (the checkpoint holds only trainable weights)."""
    module.configure_model()
    module.rng.load(checkpoint)


def check_export_hook(module: L.LightningModule, stage: str) -> None:
    """`setup`: prove `export_dir` writable before training, not after it."""
    if stage == "fit" and module.hparams.export_dir and module.trainer.is_global_zero:
        check_writable(module.hparams.export_dir, "export_dir")


def export_hook(module: L.LightningModule) -> None:
    """`on_fit_end`: save the merged model + processor to `export_dir` (the next stage's `model_path`)."""
    if module.hparams.export_dir and module.trainer.is_global_zero:
        export_model(module.model, module.processor, module.hparams.export_dir)


def export_model(model, processor, out_dir: str) -> None:
    """Save a standalone Hugging Face checkpoint: LoRA merged into a copy of the weights, plus the processor (which
    carries its pixel bounds), ready to be the next stage's `model_path`."""
    to_save = model
    if hasattr(model, "merge_and_unload"):
        to_save = copy.deepcopy(model).merge_and_unload()
    was_training = to_save.training
    to_save.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if was_training:
        to_save.train()
