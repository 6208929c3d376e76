"""SFT module: exact loss, learning, LoRA-only updates, PEFT adapter round trip, QLoRA, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from callbacks.checkpoint import AdapterCheckpoint
from datamodules.collate import model_inputs
from datamodules.vlm_data import VLMDataModule
from lightning_modules.sft import SFTModule, supervised_loss
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, QuantOptions, VLMOptions, build_vlm, unwrap
from tests.helpers import cpu_trainer


def _fit(model_path, data, tmp_path, vlm, steps=6, lr=5e-3, **trainer_kwargs):
    torch.manual_seed(0)
    module = SFTModule(model_path, vlm=vlm, optim=OptimConfig(lr=lr, warmup_ratio=0.0, weight_decay=0.0))
    dm = VLMDataModule(model_path, train_file=str(data), batch_size=4, max_length=256)
    trainer_kwargs.setdefault("enable_checkpointing", False)
    trainer = cpu_trainer(max_steps=steps, default_root_dir=tmp_path, **trainer_kwargs)
    trainer.fit(module, dm)
    return module, dm, trainer


def _batch(dm):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_supervised_loss_equals_full_logits_loss(tiny_model, color_data):
    model, _ = build_vlm(tiny_model, VLMOptions(dtype="float32", lora=None))
    batch = _batch(VLMDataModule(tiny_model, train_file=str(color_data), batch_size=4, shuffle=False))
    ours, n = supervised_loss(model, batch)
    inputs = model_inputs(batch)
    logits = model(**inputs).logits[:, :-1]
    reference = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    from datamodules.processor import load_processor

    tok = load_processor(tiny_model).tokenizer
    assert n == sum(len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in batch["solutions"])  # + im_end
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.slow
def test_lora_sft_lowers_loss_and_changes_only_adapters(tiny_model, color_data, tmp_path):
    base, _ = build_vlm(tiny_model, VLMOptions(dtype="float32", lora=None))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=8, alpha=16, dropout=0.0))
    module, dm, _ = _fit(tiny_model, color_data, tmp_path, vlm, steps=0)  # untrained reference
    batch = _batch(dm)
    with torch.no_grad():
        before, _ = supervised_loss(module.model, batch)
    module, dm, _ = _fit(tiny_model, color_data, tmp_path, vlm, steps=12)
    with torch.no_grad():
        after, _ = supervised_loss(module.model, batch)
    assert after < before - 0.3
    changed_lora, changed_base = 0, []
    for name, param in module.model.named_parameters():
        if "lora_" in name:
            changed_lora += 1
        else:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            if not torch.equal(param, base_state[key]):
                changed_base.append(name)
    assert changed_lora == 2 * 7 * 2 and not changed_base  # A and B for 7 linears in 2 layers; base bit-identical


def test_adapter_checkpoint_reloads_with_peft(tiny_model, color_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    ckpt = AdapterCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_last=True)
    module, dm, _ = _fit(tiny_model, color_data, tmp_path, vlm, steps=3, callbacks=[ckpt], enable_checkpointing=True)
    adapter = tmp_path / "ckpt" / "epoch=0-step=3_adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    assert saved and all("lora_" in k for k in saved)  # trainable weights only
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model), adapter).eval()
    batch = _batch(dm)
    inputs = model_inputs(batch)
    module.model.eval()
    with torch.no_grad():
        assert torch.allclose(module.model(**inputs).logits, reloaded(**inputs).logits, atol=1e-5)


def test_full_finetune_exports_a_loadable_checkpoint(tiny_model, color_data, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "export"
    torch.manual_seed(0)
    module = SFTModule(
        tiny_model, vlm=VLMOptions(dtype="float32", lora=None), optim=OptimConfig(lr=1e-3), export_dir=str(out)
    )
    dm = VLMDataModule(tiny_model, train_file=str(color_data), batch_size=4)
    cpu_trainer(max_steps=2, default_root_dir=tmp_path).fit(module, dm)
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    ours = unwrap(module.model).state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in reloaded.state_dict().items())
    assert (out / "tokenizer.json").exists()


@pytest.mark.slow
def test_qlora_quantizes_language_model_only_and_trains(tiny_model, color_data, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    vlm = VLMOptions(
        dtype="float32", lora=LoraOptions(r=8, alpha=16, dropout=0.0), qlora=QuantOptions(compute_dtype="float32")
    )
    model, _ = build_vlm(tiny_model, vlm)
    modules = dict(unwrap(model).named_modules())
    lm_linears = [m for n, m in modules.items() if "language_model" in n and n.endswith("q_proj.base_layer")]
    assert lm_linears and all(isinstance(m, bnb.nn.Linear4bit) for m in lm_linears)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for n, m in modules.items() if "visual" in n)
    assert not isinstance(modules["lm_head"], bnb.nn.Linear4bit)
    module, dm, _ = _fit(tiny_model, color_data, tmp_path, vlm, steps=0)
    batch = _batch(dm)
    with torch.no_grad():
        before, _ = supervised_loss(module.model, batch)
    module, _, _ = _fit(tiny_model, color_data, tmp_path, vlm, steps=8)
    with torch.no_grad():
        after, _ = supervised_loss(module.model, batch)
    assert after < before


def test_checkpointed_lora_trains_adapters_without_a_graph_through_the_frozen_vision_tower(tiny_model, color_data):
    vlm = VLMOptions(dtype="float32", gradient_checkpointing=True, lora=LoraOptions(r=4, dropout=0.0))
    model, _ = build_vlm(tiny_model, vlm)
    seen = []
    unwrap(model).model.visual.patch_embed.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    loss, _ = supervised_loss(model, _batch(VLMDataModule(tiny_model, train_file=str(color_data), batch_size=4)))
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)  # every adapter gets a gradient
    assert seen == [False]  # the frozen tower runs without autograd
