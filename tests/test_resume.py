"""A run killed mid-epoch and resumed with `ckpt_path` reaches the same weights as an uninterrupted run."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from callbacks.checkpoint import AdapterCheckpoint
from datamodules.vlm_data import VLMDataModule
from lightning_modules.sft import SFTModule
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import KillAtStep, Killed, cpu_trainer


def _run(model_path, data, root, callbacks=(), ckpt_path=None):
    L.seed_everything(0)
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, alpha=8, dropout=0.1))  # dropout: RNG must resume too
    module = SFTModule(model_path, vlm=vlm, optim=OptimConfig(lr=3e-3, warmup_ratio=0.2))
    dm = VLMDataModule(model_path, train_file=str(data), batch_size=4, seed=7)
    ckpt = AdapterCheckpoint(dirpath=root, every_n_train_steps=1, save_last=True, save_top_k=-1)
    trainer = cpu_trainer(max_steps=7, default_root_dir=root, callbacks=[ckpt, *callbacks], enable_checkpointing=True)
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_resume_mid_epoch_matches_uninterrupted(tiny_model, color_data, tmp_path):
    reference = _run(tiny_model, color_data, tmp_path / "a")
    with pytest.raises(Killed):
        _run(tiny_model, color_data, tmp_path / "b", callbacks=[KillAtStep(2)])  # 16 items / batch 4: mid epoch 0
    resumed = _run(tiny_model, color_data, tmp_path / "b", ckpt_path="last")
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6, msg=name)
