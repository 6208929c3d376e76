"""GRPO module: reference log-probs with the adapter disabled equal the base model's; a short fit raises the reward."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from assets.test_data import write_color_data
from datamodules.collate import model_inputs
from datamodules.vlm_data import VLMDataModule
from lightning_modules.grpo import GRPOConfig, GRPOModule
from lightning_modules.rollout import build_sequences, sequence_logprobs
from lightning_modules.sampling import SamplingConfig
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions, build_vlm
from tests.helpers import cpu_trainer, prompt_batch


def test_logprobs_match_full_forward_and_reference_is_base(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=4, fmt="problem")
    batch = prompt_batch(trained_tiny_model, data)
    inputs = model_inputs(batch)
    completions = [[[5, 6, 7], [8]], [[9, 10], [11, 12, 13]]]  # 2 prompts x G=2, ragged
    base, _ = build_vlm(trained_tiny_model, VLMOptions(dtype="float32", lora=None))
    base.eval()
    seqs = build_sequences(inputs, completions, pad_id=0)
    ours, _ = sequence_logprobs(base, inputs, seqs, with_grad=False)
    # Reference: a plain forward of each (prompt + completion) row through the HF model with the images repeated.
    pairs = [(item, t) for item in range(2) for t in completions[item]]
    for row, (b, tokens) in enumerate(pairs):
        ids = torch.cat([batch["input_ids"][b], torch.tensor(tokens)]).unsqueeze(0)
        mask = torch.cat([batch["attention_mask"][b], torch.ones(len(tokens), dtype=torch.long)]).unsqueeze(0)
        patches = int(batch["image_grid_thw"][b].prod())
        logits = base(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=batch["pixel_values"][b * patches : (b + 1) * patches],
            image_grid_thw=batch["image_grid_thw"][b : b + 1],
            mm_token_type_ids=(ids == base.config.image_token_id).long(),
        ).logits
        p = batch["input_ids"].shape[1]
        ref = torch.log_softmax(logits[0, p - 1 : p - 1 + len(tokens)], -1).gather(-1, torch.tensor(tokens)[:, None])
        torch.testing.assert_close(ours[row, : len(tokens)], ref.squeeze(-1), atol=1e-4, rtol=1e-4)
    # With a LoRA adapter whose B matrices are non-zero, disable_adapter() gives the base model's log-probs.
    lora, _ = build_vlm(trained_tiny_model, VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0)))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora.eval()
    adapted, _ = sequence_logprobs(lora, inputs, seqs, with_grad=False)
    with lora.disable_adapter():
        reference, _ = sequence_logprobs(lora, inputs, seqs, with_grad=False)
    assert not torch.allclose(adapted, ours, atol=1e-3)
    torch.testing.assert_close(reference, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_short_grpo_fit_raises_reward(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem", colors=["red"])  # an easy task: always "red"
    L.seed_everything(0)
    module = GRPOModule(
        trained_tiny_model,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=16, alpha=32, dropout=0.0)),
        sampling=SamplingConfig(k=8, max_new_tokens=4, temperature=1.0),
        grpo=GRPOConfig(beta=0.0, scale_rewards=True),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        log_completions_every=0,
    )
    dm = VLMDataModule(trained_tiny_model, train_file=str(data), batch_size=2, prompt_only=True)
    history = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            history.append(float(trainer.callback_metrics["train/reward/mean"]))

    cpu_trainer(max_steps=16, limit_val_batches=0, callbacks=[Record()]).fit(module, dm)
    first, last = sum(history[:4]) / 4, sum(history[-4:]) / 4
    print(history)
    assert last > first + 0.2, history


def test_grpo_with_qlora_checkpointing_and_accumulation(trained_tiny_model, tmp_path):
    import pytest

    pytest.importorskip("bitsandbytes")
    from lightning_modules.vlm import QuantOptions

    data = write_color_data(tmp_path / "d", n=4, fmt="problem")
    vlm = VLMOptions(
        dtype="float32",
        gradient_checkpointing=True,
        lora=LoraOptions(r=4, dropout=0.0),
        qlora=QuantOptions(compute_dtype="float32"),
    )
    module = GRPOModule(
        trained_tiny_model,
        vlm=vlm,
        sampling=SamplingConfig(k=4, max_new_tokens=3, temperature=1.5),
        grpo=GRPOConfig(beta=0.04, grad_accum=2),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        log_completions_every=0,
    )
    dm = VLMDataModule(trained_tiny_model, train_file=str(data), batch_size=1, prompt_only=True)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0)
    trainer.fit(module, dm)
    assert trainer.global_step == 2  # 4 prompt batches, an optimizer step every 2
    changed = [n for n, p in module.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
    assert "train/kl" in trainer.callback_metrics


class DumpRollouts(L.Callback):
    """Writes each step's rollouts (item id -> answers, rewards) to <folder>/rank<r>_step<s>.json."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import json

        rollout = pl_module.last_rollout
        k = pl_module.sampling.k
        rows = {i: [rollout["texts"][n], rollout["rewards"][n * k : (n + 1) * k]] for n, i in enumerate(rollout["ids"])}
        path = self.folder / f"rank{trainer.global_rank}_step{trainer.global_step}.json"
        path.write_text(json.dumps(rows))


def _rollouts(model_path, data, folder, devices, batch_size):
    import json

    folder.mkdir(parents=True)
    module = GRPOModule(
        model_path,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0)),
        sampling=SamplingConfig(k=4, max_new_tokens=4, temperature=1.5),
        grpo=GRPOConfig(beta=0.0),
        optim=OptimConfig(lr=0.0),  # weights stay identical, so later steps are comparable too
        log_completions_every=0,
    )
    dm = VLMDataModule(model_path, train_file=str(data), batch_size=batch_size, prompt_only=True)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    cpu_trainer(devices=devices, strategy=strategy, max_steps=2, callbacks=[DumpRollouts(folder)]).fit(module, dm)
    merged = {}
    for path in sorted(folder.glob("*.json")):
        step = path.stem.split("_step")[1]
        merged.update({(step, i): v for i, v in json.loads(path.read_text()).items()})
    return merged


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rollouts_do_not_depend_on_the_number_of_processes(trained_tiny_model, tmp_path):
    """2 prompts per step on one process == 1 prompt per step on each of 2 gloo processes: same items, same answers
    (each item's RNG is seeded from (seed, step, item id), never from the rank)."""
    data = write_color_data(tmp_path / "d", n=6, fmt="problem")
    one = _rollouts(trained_tiny_model, data, tmp_path / "one", devices=1, batch_size=2)
    two = _rollouts(trained_tiny_model, data, tmp_path / "two", devices=2, batch_size=1)
    assert len(one) == 4 and one == two
    assert len({tuple(answers) for answers, _ in one.values()}) > 1  # genuinely sampled, not degenerate
