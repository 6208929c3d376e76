"""The evaluation callback: runs at epoch end, logs the metric, writes predictions, same results on 1 or 2 DDP ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from assets.test_data import write_color_data
from callbacks.generative_eval import GenerativeEval, shard, subset, summarize
from datamodules.benchmarks.imagenet import DCSFTJson
from datamodules.vlm_data import VLMDataModule
from lightning_modules.sft import SFTModule
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import cpu_trainer


def test_shard_and_subset():
    assert [list(shard(10, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    items = list(range(20))
    picked = subset(items, 5, 0)
    # random.Random(0).sample(range(20), 5) == [12, 13, 1, 8, 15], kept in the original order
    assert picked == [1, 8, 12, 13, 15]
    assert subset(items, 5, 1) != picked  # the seed matters
    assert subset(items, None, 0) == items and subset(items, 50, 0) == items


def test_summarize_accuracy_and_breakdowns(tmp_path):
    data = write_color_data(tmp_path, n=4, fmt="problem")
    bench = DCSFTJson(str(data), name="colors")
    items = bench.load()
    results = [{"correct": c, "fallback": False} for c in (True, False, True, True)]
    metrics = summarize(bench, items, results)
    assert metrics["val/colors/acc"] == 75.0
    assert metrics["val/colors/class/blue/acc"] == 100.0 and metrics["val/colors/class/green/acc"] == 0.0


def _eval_run(model_path, data_dir, out, devices, strategy="auto", lr=1e-3, batch_size=3):
    bench = DCSFTJson(str(data_dir / "problem.json"), name="colors")
    callback = GenerativeEval([bench], every_n_epochs=1, batch_size=batch_size, max_new_tokens=4, output_dir=str(out))
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0))
    module = SFTModule(model_path, vlm=vlm, optim=OptimConfig(lr=lr))
    dm = VLMDataModule(model_path, train_file=str(data_dir / "messages.json"), batch_size=2)
    trainer = cpu_trainer(
        devices=devices,
        strategy=strategy,
        max_epochs=1,
        limit_train_batches=1,
        default_root_dir=out,
        callbacks=[callback],
    )
    trainer.fit(module, dm)
    return trainer, callback


def test_callback_runs_at_epoch_end_logs_and_writes(tiny_model, tmp_path):
    write_color_data(tmp_path / "d", n=8, fmt="problem")
    write_color_data(tmp_path / "d", n=8, fmt="messages")
    trainer, callback = _eval_run(tiny_model, tmp_path / "d", tmp_path / "out", devices=1)
    assert "val/colors/acc" in trainer.callback_metrics
    rows = [json.loads(line) for line in (tmp_path / "out" / "colors" / "epoch=0-step=1.jsonl").open()]
    assert len(rows) == 8 and set(rows[0]) >= {"id", "prompt", "response", "extracted", "correct"}
    assert callback.last_metrics["val/colors/acc"] == pytest.approx(100 * sum(r["correct"] for r in rows) / 8, abs=0.01)


def test_dropout_is_off_while_generating_and_restored_after(tiny_model, tmp_path):
    write_color_data(tmp_path / "d", n=4, fmt="problem")
    bench = DCSFTJson(str(tmp_path / "d" / "problem.json"), name="colors")
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.5))
    module = SFTModule(tiny_model, vlm=vlm)
    module.configure_model()
    module.model.train()
    dropouts = [m for m in module.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts and all(m.training for m in dropouts)
    seen = []
    generate = GenerativeEval.generate

    def spy(self, pl_module, items, max_new_tokens=None):  # record the dropout modes at generation time
        seen.extend(m.training for m in dropouts)
        return generate(self, pl_module, items, max_new_tokens)

    callback = GenerativeEval([bench], max_new_tokens=2)
    callback._items["colors"] = bench.load()
    callback.generate = spy.__get__(callback)

    class _Trainer:  # the few attributes evaluate() reads
        global_rank, world_size, is_global_zero, current_epoch, global_step = 0, 1, False, 0, 0

    module.log = lambda *a, **k: None
    callback.evaluate(_Trainer(), module)
    assert seen and not any(seen)  # every dropout module was off while answers were generated
    assert all(m.training for m in dropouts)  # and back on afterwards


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ddp_processes_give_same_predictions(tiny_model, tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    write_color_data(tmp_path / "d", n=7, fmt="problem")  # odd count: the last rank takes the remainder
    write_color_data(tmp_path / "d", n=7, fmt="messages")
    # lr 0: weights identical on both runs, so predictions must match exactly
    _eval_run(tiny_model, tmp_path / "d", tmp_path / "one", devices=1, lr=0.0, batch_size=2)
    _eval_run(tiny_model, tmp_path / "d", tmp_path / "two", devices=2, strategy="ddp_spawn", lr=0.0, batch_size=2)
    one = Path(tmp_path / "one" / "colors" / "epoch=0-step=1.jsonl").read_text()
    two = Path(tmp_path / "two" / "colors" / "epoch=0-step=1.jsonl").read_text()
    assert one == two and len(one.splitlines()) == 7
