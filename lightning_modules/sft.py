"""SFTModule: supervised fine-tuning of a VLM on assistant tokens only.

Loss = mean cross-entropy over supervised (answer + `<|im_end|>`) tokens. Logits are computed only at those positions:
the language model's hidden states are gathered at supervised positions before `lm_head`, so memory does not grow
with vocabulary x sequence length (151,665 x ~1,300 for a Qwen2.5-VL ImageNet batch otherwise).

    python train.py fit --config configs/demo/sft.yaml
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import grad_norm

from datamodules.collate import IGNORE_INDEX, model_inputs
from lightning_modules.vlm import VLMOptions, build_vlm, unwrap


def supervised_loss(model, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over supervised positions; lm_head runs only there. Returns (loss, n tokens)."""
    hf = unwrap(model)
    inputs = model_inputs(batch)
    hidden = hf.model(**inputs, use_cache=False).last_hidden_state  # [B, T, H]
    targets = batch["labels"][:, 1:]  # [B, T-1]
    positions = targets != IGNORE_INDEX  # [B, T-1]
    selected = hidden[:, :-1][positions]  # [N, H]
    logits = hf.lm_head(selected).float()  # [N, V]
    n = int(positions.sum())
    loss = F.cross_entropy(logits, targets[positions], reduction="sum") / max(n, 1)
    return loss, n


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_ratio` (transformers' cosine schedule)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class SFTModule(L.LightningModule):
    """Assistant-only SFT with LoRA, QLoRA or full fine-tuning.

    Args:
        model_path: checkpoint folder (or hub id); linked to `data.model_path` by train.py.
        vlm: builder options (dtype, attention, freezing, lora, qlora, adapter_path).
        lr: peak learning rate (official: 1e-5).
        weight_decay: AdamW weight decay (ms-swift default 0.1).
        adam_betas: AdamW betas (ms-swift default (0.9, 0.95)).
        warmup_ratio: share of steps with linear warmup (official 0.1).
        min_lr_ratio: floor of the cosine decay as a share of `lr`.
        vision_lr_scale: learning-rate multiplier for vision-tower / merger parameters (a randomly initialised
            vision tower, as in the embedded demo, needs a larger one; 1.0 = official).
        export_dir: if set, save the trained model at fit end (merged with its adapter) with its processor, ready
            to be the `model_path` of a next stage.
    """

    def __init__(self, model_path: str, vlm: VLMOptions | None = None, lr: float = 1e-5, weight_decay: float = 0.1,
                 adam_betas: tuple[float, float] = (0.9, 0.95), warmup_ratio: float = 0.1, min_lr_ratio: float = 0.0,
                 export_dir: str | None = None,
                 vision_lr_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["vlm"])
        self.vlm = vlm or VLMOptions()
        self.hparams["vlm"] = asdict(self.vlm)  # plain dict: checkpoints stay loadable with weights_only=True
        self.model = None
        self.processor = None
        self.strict_loading = False  # checkpoints hold trainable weights only
        self._t0 = 0.0
        self._tokens = 0
        self._pending_rng: dict[str, Any] | None = None

    def configure_model(self) -> None:
        """Build the model lazily, so parsing a config never loads weights (and FSDP can shard at init)."""
        if self.model is None:
            self.model, self.processor = build_vlm(self.hparams.model_path, self.vlm)

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, n = supervised_loss(self.model, batch)
        self._tokens += int(batch["attention_mask"].sum())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        self.log("train/supervised_tokens", float(n), batch_size=len(batch["ids"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "placeholder" in batch:  # no val_file: validation only runs the evaluation callbacks
            return
        loss, _ = supervised_loss(self.model, batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["ids"]))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            torch.set_rng_state(self._pending_rng["torch"])
            self._pending_rng = None
        if self._t0 == 0.0:
            self._t0 = time.perf_counter()

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = grad_norm(self.model, norm_type=2)
        if "grad_2.0_norm_total" in norms:
            self.log("train/grad_norm", norms["grad_2.0_norm_total"])
        elapsed = time.perf_counter() - self._t0
        if elapsed > 0:
            self.log("train/tokens_per_s", self._tokens / elapsed)
        self._t0, self._tokens = time.perf_counter(), 0
        self.log("train/lr", optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("no trainable parameters: enable lora or unfreeze part of the model")
        scale = self.hparams.vision_lr_scale
        groups = []
        for is_vision in (False, True):
            for decay in (True, False):
                params = [p for n, p in named if (".visual." in n) == is_vision and (p.ndim >= 2) == decay]
                if params:
                    groups.append({"params": params, "weight_decay": self.hparams.weight_decay if decay else 0.0,
                                   "lr": self.hparams.lr * (scale if is_vision else 1.0)})  # fmt: skip
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.adam_betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, self.hparams.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable weights (the frozen base is reloaded from model_path) and the RNG state."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.configure_model()
        self._pending_rng = checkpoint.get("rng")  # applied at the first resumed batch: loader setup draws RNG too

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            export_model(self.model, self.processor, self.hparams.export_dir)


def export_model(model, processor, out_dir: str) -> None:
    """Save a standalone Hugging Face checkpoint: LoRA merged into a copy of the weights, plus the processor."""
    import copy

    to_save = model
    if hasattr(model, "merge_and_unload"):
        to_save = copy.deepcopy(model).merge_and_unload()
    was_training = to_save.training
    to_save.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if was_training:
        to_save.train()
