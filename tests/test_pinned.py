"""Pinned first losses of a seeded tiny SFT and GRPO run (torchtune's recipe-test habit): a silent numerical change
anywhere in data encoding, the model builder, the losses, sampling or the optimiser fails here.

Recorded on CPU, float32, torch 2.13 / transformers 5.24 (requirements-cpu.txt). If a change is intended, rerun
with `PINNED_PRINT=1 python -m pytest tests/test_pinned.py -s` and paste the printed values, saying why in the commit.
"""

from __future__ import annotations

import os

import lightning as L
import pytest

from assets.test_data import write_color_data
from datamodules.vlm_data import VLMDataModule
from lightning_modules.grpo import GRPOConfig, GRPOModule
from lightning_modules.sampling import SamplingConfig
from lightning_modules.sft import SFTModule
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import cpu_trainer

SFT_LOSSES = [6.193066596984863, 5.902868747711182, 5.783575534820557, 5.664910316467285]
GRPO = {  # step 0: every answer wrong (zero advantages, zero KL); the policy then moves off the reference
    "train/loss": [0.0, -7.450580596923828e-09, 0.0001311314117629081, 0.0002012886106967926],
    "train/reward/mean": [0.0, 0.25, 0.125, 0.125],
    "train/kl": [0.0, 0.0, 0.0021328360307961702, 0.005891901440918446],
}


class Record(L.Callback):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.values: dict[str, list[float]] = {k: [] for k in keys}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key in self.keys:
            self.values[key].append(float(trainer.callback_metrics[key]))


def _report(name: str, values) -> None:
    if os.environ.get("PINNED_PRINT"):
        print(f"{name} = {values!r}")


def test_sft_first_four_losses(tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=16)
    L.seed_everything(0)
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=8, alpha=16, dropout=0.1))
    module = SFTModule(tiny_model, vlm=vlm, optim=OptimConfig(lr=5e-3, warmup_ratio=0.25))
    record = Record(["train/loss"])
    cpu_trainer(max_steps=4, callbacks=[record]).fit(
        module, VLMDataModule(tiny_model, train_file=str(data), batch_size=4)
    )
    _report("SFT_LOSSES", record.values["train/loss"])
    assert record.values["train/loss"] == pytest.approx(SFT_LOSSES, rel=1e-4)


def test_grpo_first_four_steps(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    L.seed_everything(0)
    module = GRPOModule(
        trained_tiny_model,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=8, alpha=16, dropout=0.0)),
        sampling=SamplingConfig(k=4, max_new_tokens=4, temperature=1.0, seed=5),
        grpo=GRPOConfig(beta=0.04),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        log_completions_every=0,
    )
    record = Record(list(GRPO))
    dm = VLMDataModule(trained_tiny_model, train_file=str(data), batch_size=2, prompt_only=True)
    cpu_trainer(max_steps=4, callbacks=[record]).fit(module, dm)
    _report("GRPO", record.values)
    for key, expected in GRPO.items():
        assert record.values[key] == pytest.approx(expected, rel=1e-3, abs=1e-7), key
