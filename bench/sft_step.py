"""SFT step benchmark: our SFTModule step against TRL's SFTTrainer step, same tiny Qwen2.5-VL, same batch.

What is measured, per configuration, on CPU with one torch thread:
- time per optimisation step, median over interleaved A B A B rounds after a warm-up, both sides in ONE process:
  * ours: `lightning_modules.sft.supervised_loss` (the language model's hidden states are gathered at supervised
    positions before lm_head) + `loss.backward()` + the AdamW and LR-schedule step built by
    `SFTModule.configure_optimizers` + `zero_grad` (what Lightning's automatic optimisation runs per step);
  * TRL: `SFTTrainer.training_step` (its `compute_loss`: the fused chunked LM head, entropy / token-accuracy metrics,
    `accelerator.backward`) + `optimizer.step()` + `lr_scheduler.step()` + `model.zero_grad()` (what
    `Trainer.train` runs per step, minus callbacks, logging and gradient clipping, which ours does not do either).
  Timing `training_step` + the optimizer step directly (rather than a callback around `trainer.train()`) lets the two
  sides interleave in one process and keeps data loading out of both timings: each side's batch comes once from its
  own collator (ours: `VLMDataModule`'s dataloader; TRL: `trainer.get_train_dataloader()`) and is reused.
- peak memory of a step: each side in a fresh spawned process, the increase of peak RSS over the RSS just before
  the measured steps (after one warm-up step, so AdamW state already exists on both sides); see bench/common.py.

Same on both sides: the model folder (same initial weights), the examples (one-colour PNGs, "What color is the
image? ..." -> colour word, prompt-completion data for TRL), batch size, fp32, SDPA attention, LoRA r 32 / alpha 64 /
dropout 0.05 on the language-model linears, torch AdamW (lr 1e-5, betas (0.9, 0.95), weight decay 0.1), no gradient
checkpointing. Configurations: the tiny BPE vocabulary (1,024) and the real Qwen2.5 vocabulary (151,665) with 224x224
images (64 image tokens), and the real vocabulary with 448x448 images (256 image tokens).

    .venv/bin/python -m bench.sft_step            # about 2-3 minutes on 2 cores
    .venv/bin/python -m bench.sft_step --quick    # fewer rounds, no 256-token configuration

The second-to-last line is `ratio_tiny_vocab: <ours/TRL time>`, the last `ratio: <ours/TRL time>` for the real
vocabulary with 64 image tokens.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    MALLOC_ENV,
    count_params,
    fmt_ms,
    fmt_params,
    median,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    run_in_fresh_process,
    set_threads,
    versions,
)

LR = 1e-5
TOTAL_STEPS = 1000  # length of both LR schedules (only their step cost matters here)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Config:
    name: str
    tokenizer: str  # "bpe" (1,024 tokens) or "qwen" (151,665)
    image_size: int  # square images; 224 -> 8x8 = 64 image tokens, 448 -> 256
    headline: str | None = None  # the summary line this configuration's ratio goes to


@dataclass(frozen=True)
class Paths:
    model: str
    data: str


@dataclass
class Side:
    """One side of the comparison: a ready-to-run step on a fixed batch, and what it computes."""

    name: str
    step: Callable[[], float]
    info: dict[str, Any] = field(default_factory=dict)


def quiet() -> None:
    """Silence warnings and library chatter (they would drown the figures)."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def batch_info(batch: dict[str, Any], image_token_id: int) -> dict[str, Any]:
    """Shapes that must agree between the two sides."""
    ids, labels = batch["input_ids"], batch["labels"]
    return {
        "sequences": int(ids.shape[0]),
        "padded_length": int(ids.shape[1]),
        "real_tokens": int(batch["attention_mask"].sum()),
        "image_tokens": int((ids == image_token_id).sum()),
        "supervised_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        "pixel_rows": int(batch["pixel_values"].shape[0]),
    }


# ------------------------------------------------------------------------------------------------------------ ours
def build_ours(paths: Paths, batch_size: int) -> Side:
    """SFTModule's model, optimizer and schedule, and a batch from VLMDataModule (right padding, prompt masked)."""
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.sft import SFTModule, supervised_loss
    from lightning_modules.vlm import LoraOptions, VLMOptions

    module = SFTModule(paths.model, vlm=VLMOptions(dtype="float32", lora=LoraOptions()), lr=LR)
    module.configure_model()
    module.trainer = SimpleNamespace(estimated_stepping_batches=TOTAL_STEPS)  # all configure_optimizers reads
    conf = module.configure_optimizers()
    module.trainer = None
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    model = module.model
    model.train()

    data = VLMDataModule(model_path=paths.model, train_file=paths.data, batch_size=batch_size, shuffle=False,
                         max_length=None)  # fmt: skip
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))

    def step() -> float:
        loss, _ = supervised_loss(model, batch)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    tok = data.processor.tokenizer
    info = batch_info(batch, tok.convert_tokens_to_ids("<|image_pad|>"))
    info.update(params=count_params(model), trainable=count_params(model, trainable_only=True),
                optimizer=type(optimizer).__name__, vocab=len(tok),
                hidden=model.get_base_model().config.get_text_config().hidden_size)  # fmt: skip
    return Side("ours", step, info)


# ------------------------------------------------------------------------------------------------------------- TRL
def trl_records(data_file: str) -> list[dict[str, Any]]:
    """Our official-format rows as TRL conversational prompt-completion rows with PIL images (same images)."""
    from datamodules.formats import IMAGE_MARKER
    from datamodules.images import load_image

    folder = Path(data_file).parent
    records = []
    for row in json.loads(Path(data_file).read_text()):
        user, assistant = row["messages"]
        # TRL's prepare_multimodal_messages puts the image before the user text, as the "<image>" prefix does ours
        assert user["content"].startswith(IMAGE_MARKER)
        records.append({
            "prompt": [{"role": "user", "content": user["content"][len(IMAGE_MARKER):]}],
            "completion": [{"role": "assistant", "content": assistant["content"]}],
            "images": [load_image(folder / p) for p in row["images"]],
        })  # fmt: skip
    return records


def build_trl(paths: Paths, batch_size: int, workdir: str) -> Side:
    """TRL's SFTTrainer on the same checkpoint and examples; a batch from its own dataloader and collator."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    from lightning_modules.processor import load_processor
    from lightning_modules.vlm import LANGUAGE_LINEARS, LoraOptions

    processor = load_processor(paths.model)  # the image-only processor, registered with AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(paths.model, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraOptions()
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=LANGUAGE_LINEARS, bias="none")  # fmt: skip
    args = SFTConfig(
        output_dir=str(Path(workdir) / "trl_out"), per_device_train_batch_size=batch_size, learning_rate=LR,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, optim="adamw_torch", lr_scheduler_type="cosine",
        max_steps=TOTAL_STEPS, use_cpu=True, bf16=False, gradient_checkpointing=False, remove_unused_columns=False,
        max_length=None, report_to="none", save_strategy="no", logging_steps=10**6, dataloader_num_workers=0,
        seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_records(paths.data)),
                         processing_class=processor, peft_config=peft_config)  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=TOTAL_STEPS)
    batch = next(iter(trainer.get_train_dataloader()))
    num_items = trainer._get_num_items_in_batch([batch], trainer.args.device)  # as Trainer.train computes it
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train before each step
    model = trainer.model
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler

    def step() -> float:
        loss = trainer.training_step(model, batch, num_items)
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        return float(loss)

    info = batch_info(batch, processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    info.update(params=count_params(model), trainable=count_params(model, trainable_only=True),
                optimizer=type(optimizer).__name__, vocab=len(processor.tokenizer),
                hidden=model.get_base_model().config.get_text_config().hidden_size)  # fmt: skip
    return Side("TRL", step, info)


def build_side(name: str, paths: Paths, batch_size: int, workdir: str) -> Side:
    return build_ours(paths, batch_size) if name == "ours" else build_trl(paths, batch_size, workdir)


# ---------------------------------------------------------------------------------------------------------- memory
def memory_worker(name: str, paths: Paths, batch_size: int, workdir: str, steps: int) -> dict[str, float | bool]:
    """In a fresh process: peak RSS increase of `steps` steps over the RSS right before them (after a warm-up)."""
    quiet()
    set_threads(1)
    side = build_side(name, paths, batch_size, workdir)
    gc.collect()
    reset_peak_rss()
    before_first = rss_mib()
    side.step()  # the first step also allocates AdamW state (same size on both sides)
    first = peak_rss_mib() - before_first
    gc.collect()
    supported = reset_peak_rss()
    before = rss_mib()
    for _ in range(steps):
        side.step()
    return {"baseline_mib": before, "step_mib": peak_rss_mib() - before, "first_step_mib": first, "reset": supported}


# ------------------------------------------------------------------------------------------------------------ main
def prepare(workdir: Path, cfg: Config, batch_size: int, hidden: int) -> Paths:
    """The tiny model folder for the tokenizer (built once) and `batch_size` examples with this image size."""
    from lightning_modules.tiny import build_tiny_vlm
    from tests.conftest import write_color_data

    model_dir = workdir / f"model_{cfg.tokenizer}"
    if not (model_dir / "config.json").exists():
        build_tiny_vlm(model_dir, tokenizer=cfg.tokenizer, hidden=hidden)
    data = write_color_data(workdir / f"data_{cfg.image_size}", n=batch_size, fmt="messages", size=cfg.image_size)
    return Paths(str(model_dir), str(data))


def time_interleaved(a: Side, b: Side, warmup: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Warm-up, then A B A B ... rounds; returns per-step times of A and B and A's/B's first losses."""
    losses = [a.step(), b.step()]
    for _ in range(max(0, warmup - 1)):
        a.step()
        b.step()
    times_a, times_b = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a.step()
        t1 = time.perf_counter()
        b.step()
        t2 = time.perf_counter()
        times_a.append(t1 - t0)
        times_b.append(t2 - t1)
    return times_a, times_b, losses


def describe(cfg: Config, info_ours: dict[str, Any], info_trl: dict[str, Any]) -> str:
    keys = ["sequences", "padded_length", "real_tokens", "image_tokens", "supervised_tokens", "pixel_rows"]
    rows = [f"  {k:18s} ours {info_ours[k]:>6}   TRL {info_trl[k]:>6}" for k in keys]
    head = (f"[{cfg.name}] vocab {info_ours['vocab']:,}, hidden {info_ours['hidden']}, {cfg.image_size}x{cfg.image_size} "
            f"images; params ours {fmt_params(info_ours['params'])} / TRL {fmt_params(info_trl['params'])}, trainable "
            f"(LoRA) {fmt_params(info_ours['trainable'])} / {fmt_params(info_trl['trainable'])}; optimizers "
            f"{info_ours['optimizer']} / {info_trl['optimizer']}")  # fmt: skip
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size (both vocabularies)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="timed A B rounds per configuration (0: per-config)")
    parser.add_argument("--mem-steps", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no 256-image-token configuration")
    args = parser.parse_args()

    quiet()
    set_threads(1)
    import torch

    configs = [Config("tiny_vocab", "bpe", 224, "ratio_tiny_vocab"), Config("real_vocab", "qwen", 224, "ratio")]
    if not args.quick:
        configs.append(Config("real_vocab_256img", "qwen", 448))
    default_rounds = {"tiny_vocab": 20, "real_vocab": 8, "real_vocab_256img": 4}
    start = time.perf_counter()
    print(f"SFT step, ours vs TRL SFTTrainer; {versions('torch', 'transformers', 'trl', 'peft', 'lightning')}; "
          f"torch threads {torch.get_num_threads()}; batch {args.batch}; fp32; LoRA r32/a64 on LM linears")  # fmt: skip

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        workdir = Path(tmp)
        all_paths = {cfg.name: prepare(workdir, cfg, args.batch, args.hidden) for cfg in configs}
        for cfg in configs:
            paths = all_paths[cfg.name]
            ours = build_ours(paths, args.batch)
            trl = build_trl(paths, args.batch, tmp)
            print(describe(cfg, ours.info, trl.info))
            rounds = args.rounds or (max(3, default_rounds[cfg.name] // 2) if args.quick else default_rounds[cfg.name])
            t_ours, t_trl, losses = time_interleaved(ours, trl, args.warmup, rounds)
            res = {"ours": median(t_ours), "trl": median(t_trl), "rounds": rounds}
            res["ratio"] = res["ours"] / res["trl"]
            print(f"  first-step loss    ours {losses[0]:.4f}   TRL {losses[1]:.4f}  (LoRA B = 0: base model; TRL also "
                  f"supervises the '\\n' after <|im_end|>)")  # fmt: skip
            print(f"  step time (median of {rounds}, interleaved)  ours {fmt_ms(res['ours'])}   TRL "
                  f"{fmt_ms(res['trl'])}   ours/TRL {res['ratio']:.3f}", flush=True)  # fmt: skip
            results[cfg.name] = res
            del ours, trl
            gc.collect()

        if not args.no_memory:
            print(f"peak memory of a step: fresh spawned process per side, peak RSS over {args.mem_steps} steps minus "
                  f"RSS before them (after 1 warm-up step); glibc env {MALLOC_ENV}")  # fmt: skip
            for cfg in configs:
                for name in ("ours", "TRL"):
                    mem = run_in_fresh_process(memory_worker, name, all_paths[cfg.name], args.batch, tmp,
                                               args.mem_steps, env=MALLOC_ENV)  # fmt: skip
                    results[cfg.name][f"mem_{name}"] = mem
                m_o, m_t = results[cfg.name]["mem_ours"], results[cfg.name]["mem_TRL"]
                print(f"  [{cfg.name}] step peak RSS increase  ours {m_o['step_mib']:.0f} MiB   TRL "
                      f"{m_t['step_mib']:.0f} MiB   (first step ours {m_o['first_step_mib']:.0f} / TRL "
                      f"{m_t['first_step_mib']:.0f} MiB; RSS before ours {m_o['baseline_mib']:.0f} / TRL "
                      f"{m_t['baseline_mib']:.0f} MiB{'' if m_o['reset'] else '; peak reset unsupported'})",
                      flush=True)  # fmt: skip

    print("\n| configuration | ours step | TRL step | ours/TRL | ours peak +RSS | TRL peak +RSS |\n|---|---|---|---|---|---|")
    for cfg in configs:
        res = results[cfg.name]
        mem = (f"{res['mem_ours']['step_mib']:.0f} MiB", f"{res['mem_TRL']['step_mib']:.0f} MiB") \
            if "mem_ours" in res else ("-", "-")  # fmt: skip
        print(f"| {cfg.name} | {fmt_ms(res['ours'])} | {fmt_ms(res['trl'])} | {res['ratio']:.3f} | {mem[0]} | "
              f"{mem[1]} |")  # fmt: skip
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    for cfg in configs:
        if cfg.headline == "ratio_tiny_vocab":
            print(f"ratio_tiny_vocab: {results[cfg.name]['ratio']:.3f}")
    for cfg in configs:
        if cfg.headline == "ratio":
            print(f"ratio: {results[cfg.name]['ratio']:.3f}")


if __name__ == "__main__":
    main()
