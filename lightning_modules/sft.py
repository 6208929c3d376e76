"""SFTModule: supervised fine-tuning of a VLM on assistant tokens only.

Loss = mean cross-entropy over supervised (answer + `<|im_end|>`) tokens. Logits are computed only at those positions:
the language model's hidden states are gathered at supervised positions before `lm_head`, so memory does not grow
with vocabulary x sequence length (151,665 x ~1,300 for a Qwen2.5-VL ImageNet batch otherwise).

    python train.py fit --config configs/demo/sft.yaml
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import grad_norm

from datamodules.collate import IGNORE_INDEX, model_inputs
from datamodules.errors import checked
from lightning_modules.training import (
    OptimConfig,
    RNGResume,
    check_export_hook,
    export_hook,
    load_trainable_hook,
    optimizers_hook,
    save_trainable_hook,
)
from lightning_modules.vlm import VLMOptions, build_vlm, unwrap, vlm_problems


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


class SFTModule(L.LightningModule):
    """Assistant-only SFT with LoRA, QLoRA or full fine-tuning.

    Args:
        model_path: checkpoint folder (or hub id); linked to `data.model_path` by train.py.
        vlm: builder options (dtype, attention, freezing, lora, qlora, adapter_path).
        optim: AdamW + warmup-cosine settings (official DC-SFT: lr 1e-5, warmup 0.1, weight decay 0.1).
        export_dir: if set, save the trained model at fit end (merged with its adapter) with its processor, ready
            to be the `model_path` of a next stage.
    """

    def __init__(
        self,
        model_path: str,
        vlm: VLMOptions = VLMOptions(),
        optim: OptimConfig = OptimConfig(),
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vlm", "optim"])
        # copies: the defaults in the signature are shared instances
        self.vlm, self.optim = copy.deepcopy(vlm), copy.deepcopy(optim)
        checked(vlm_problems(self.vlm) + self.optim.problems(), "SFT")
        self.hparams.update(vlm=asdict(self.vlm), optim=asdict(self.optim))  # plain dicts: weights_only loading
        self.model = None
        self.processor = None
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.rng = RNGResume()
        self._t0 = 0.0
        self._tokens = 0

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
        if not batch["ids"]:  # no val_file: validation only runs the evaluation callbacks
            return
        loss, _ = supervised_loss(self.model, batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["ids"]))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.rng.restore_pending()
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

    # shared with GRPOModule / SFTModule as functions (lightning_modules/training.py), not through a base class
    configure_optimizers = optimizers_hook
    on_save_checkpoint = save_trainable_hook
    on_load_checkpoint = load_trainable_hook
    setup = check_export_hook
    on_fit_end = export_hook
