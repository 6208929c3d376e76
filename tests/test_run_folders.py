"""Run folders that cannot mix, resumes that find the newest complete checkpoint, a global batch that holds on any
machine, and DDP workers that die with their launcher. Each test names the defect it guards against."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from assets.test_data import write_color_data
from callbacks.checkpoint import AdapterCheckpoint, newest_checkpoint, remove_leftovers
from callbacks.global_batch import GlobalBatchSize, accumulation
from datamodules.vlm_data import VLMDataModule
from lightning_modules.difficulty import DifficultyEstimator
from lightning_modules.sampling import SamplingConfig
from lightning_modules.sft import SFTModule
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import cpu_trainer

ROOT = Path(__file__).resolve().parents[1]


def fit(model, data, root, steps=2, ckpt_path=None, version=None, callbacks=()):
    module = SFTModule(model, vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4)), optim=OptimConfig(lr=1e-3))
    logger = TensorBoardLogger(save_dir=str(root), name="sft", version=version)
    checkpoint = AdapterCheckpoint(save_last=True, every_n_train_steps=1, save_top_k=-1)
    trainer = cpu_trainer(max_steps=steps, logger=logger, enable_checkpointing=True, callbacks=[checkpoint, *callbacks])
    trainer.fit(module, VLMDataModule(model, train_file=str(data), batch_size=2), ckpt_path=ckpt_path)
    return trainer


def test_each_fit_gets_its_own_version_folder(tiny_model, tmp_path):
    """A rerun used to write last-v1.ckpt beside the previous run's last_adapter, under the new run's config."""
    data = write_color_data(tmp_path / "d", n=4)
    first, second = fit(tiny_model, data, tmp_path), fit(tiny_model, data, tmp_path)
    assert Path(first.log_dir).name == "version_0" and Path(second.log_dir).name == "version_1"
    for trainer in (first, second):
        names = sorted(p.name for p in Path(trainer.log_dir, "checkpoints").iterdir())
        assert "last.ckpt" in names and "last_adapter" in names and not any("-v1" in n for n in names)
        step = (Path(trainer.log_dir) / "checkpoints" / "last_adapter" / "dcsft_step.json").read_text()
        assert '"global_step": 2' in step  # the adapter and last.ckpt describe the same step


def test_newest_complete_checkpoint_and_leftovers(tmp_path):
    """--ckpt_path last used to train from scratch although a complete epoch=0-step=1.ckpt was on disk."""
    import zipfile

    run = tmp_path / "sft"
    (run / "version_0" / "checkpoints").mkdir(parents=True)
    (run / "version_1" / "checkpoints").mkdir(parents=True)
    good = run / "version_0" / "checkpoints" / "epoch=0-step=1.ckpt"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("data.pkl", b"x")
    time.sleep(0.01)
    partial = run / "version_1" / "checkpoints" / "last.ckpt"
    partial.write_bytes(b"PK\x03\x04 cut by a kill")  # newer, but not a complete archive
    assert newest_checkpoint(run) == ("version_0", good)
    leftover = run / "version_0" / "checkpoints" / "last.ckpt.tmp"
    leftover.write_bytes(b"x")
    (run / "version_0" / "checkpoints" / "last_adapter.tmp").mkdir()
    assert len(remove_leftovers(run / "version_0" / "checkpoints")) == 2 and good.exists()
    assert newest_checkpoint(tmp_path / "nothing") is None


def test_ckpt_path_last_resumes_into_the_same_version(tiny_model, tmp_path, capsys):
    from train import resume_last

    data = write_color_data(tmp_path / "d", n=4)
    fit(tiny_model, data, tmp_path, steps=2)
    fit(tiny_model, data, tmp_path, steps=1)  # version_1, newer
    from jsonargparse import Namespace

    config = Namespace(ckpt_path="last", allow_fresh_start=False)
    config.trainer = Namespace(logger=Namespace(init_args=Namespace(save_dir=str(tmp_path), name="sft")))
    resume_last(config)
    assert config.trainer.logger.init_args.version == "version_1"
    assert Path(config.ckpt_path).parent == tmp_path / "sft" / "version_1" / "checkpoints"
    resumed = fit(tiny_model, data, tmp_path, steps=3, ckpt_path=config.ckpt_path, version="version_1")
    assert resumed.global_step == 3 and Path(resumed.log_dir).name == "version_1"
    fresh = Namespace(ckpt_path="last", allow_fresh_start=True)
    fresh.trainer = Namespace(logger=Namespace(init_args=Namespace(save_dir=str(tmp_path / "new"), name="sft")))
    resume_last(fresh)
    assert fresh.ckpt_path is None


def test_global_batch_size():
    """Paper configs fixed accumulate_grad_batches: batch 16 on 8 GPUs, silently 2 on one."""
    assert accumulation(16, 1, 8) == 2 and accumulation(16, 1, 1) == 16 and accumulation(16, 2, 1) == 8
    with pytest.raises(ValueError, match="not a multiple of data.batch_size 3 x 1 device"):
        accumulation(16, 3, 1)


def test_global_batch_sets_accumulation_for_sft_and_grpo(tiny_model, tmp_path):
    from lightning_modules.grpo import GRPOModule

    data = write_color_data(tmp_path / "d", n=8)
    trainer = fit(tiny_model, data, tmp_path, steps=1, callbacks=[GlobalBatchSize(8)])
    assert trainer.accumulate_grad_batches == 4 and trainer.global_step == 1  # 4 micro-batches of 2
    module = GRPOModule(tiny_model, vlm=VLMOptions(dtype="float32"))
    GlobalBatchSize(8).setup(
        type("T", (), {"datamodule": VLMDataModule(tiny_model, batch_size=2), "world_size": 2})(), module, "fit"
    )
    assert module.grpo.grad_accum == 2 and module.hparams["grpo"]["grad_accum"] == 2


def test_module_and_data_seeds_are_independent(trained_tiny_model, tmp_path):
    """sampling.seed != data.seed used to crash after the model loaded (Lightning's hparams merge)."""
    data = write_color_data(tmp_path / "d", n=2, fmt="problem")
    module = DifficultyEstimator(
        trained_tiny_model,
        vlm=VLMOptions(dtype="float32", lora=None),
        sampling=SamplingConfig(k=2, max_new_tokens=2, seed=7),
    )
    dm = VLMDataModule(trained_tiny_model, predict_file=str(data), seed=3)
    trainer = cpu_trainer(logger=TensorBoardLogger(str(tmp_path)))  # the merge happens when a logger is set
    assert len(trainer.predict(module, dm)[0]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_ddp_worker_dies_with_its_launcher(tmp_path):
    """kill -9 of a DDP launcher used to leave its workers running."""
    worker = "import os, sys, time; sys.path.insert(0, os.getcwd()); import train; train.die_with_launcher(); time.sleep(120)"
    launcher = (
        "import os, subprocess, sys, time; env = dict(os.environ, LOCAL_RANK='1'); "
        f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], env=env); print(p.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(12)  # the worker imports train (lightning, transformers) and arms the signal
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the worker outlived its launcher")
