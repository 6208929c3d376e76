"""SFT step benchmark: our SFTModule step against TRL's SFTTrainer step, same tiny Qwen2.5-VL, same batch.

What is measured, per configuration, on CPU with one torch thread:
- time per optimisation step, median over interleaved rounds (ours, TRL, TRL-compact, ours, ...) after a warm-up,
  all in ONE process:
  * ours: `lightning_modules.sft.supervised_loss` (hidden states gathered at supervised positions before lm_head) +
    `loss.backward()` + the AdamW and LR-schedule step built by `SFTModule.configure_optimizers` + `zero_grad`, i.e.
    what Lightning's automatic optimisation runs per step (bench/common.py `build_sft_step`, `sft_step`);
  * TRL: `SFTTrainer.training_step` (its `compute_loss`: the fused chunked LM head, entropy / token-accuracy metrics,
    `accelerator.backward`) + `optimizer.step()` + `lr_scheduler.step()` + `model.zero_grad()`, i.e. what
    `Trainer.train` runs per step minus callbacks, logging and gradient clipping (ours does none of these either);
  * TRL-compact (extra, not stock TRL on CPU): the same TRL step with its fused LM head scoring supervised positions
    only, as TRL 1.16 does where Triton runs (CUDA / XPU); on CPU it projects every position through lm_head. This
    row estimates what is left of the gap on a GPU.
  Timing `training_step` + the optimizer step directly (rather than a callback around `trainer.train()`) lets the
  sides interleave in one process and keeps data preparation out of every timing: each side's batch comes once from
  its own collator (ours: `VLMDataModule`'s dataloader; TRL: `trainer.get_train_dataloader()`) and is reused.
- peak memory of a step: ours and TRL (TRL-compact with --compact-memory), each in a fresh spawned process: peak RSS
  during a step minus RSS just before it (after one warm-up step, so AdamW state exists on every side); see
  bench/common.py.

Same on every side: the model folder (same initial weights), the examples (one-colour PNGs, "What color is the
image? ..." -> colour word; TRL gets them as conversational prompt-completion rows with the same PIL images), batch
size, fp32, SDPA attention, LoRA r 32 / alpha 64 / dropout 0.05 on the language-model linears, torch AdamW (lr 1e-5,
betas (0.9, 0.95), weight decay 0.1), no gradient checkpointing. Configurations: the tiny BPE vocabulary (~460 tokens,
512 lm_head rows) and the real Qwen2.5 vocabulary (151,665 tokens, 151,680 rows), both with 224x224 images (64 image
tokens each); with --large also the real vocabulary with 448x448 images (256 image tokens each).

    .venv/bin/python -m bench.sft_step            # about 2 minutes on 2 cores
    .venv/bin/python -m bench.sft_step --large    # + the 256-image-token configuration (about +1.5 minutes)
    .venv/bin/python -m bench.sft_step --quick --no-memory    # a quick look

The second-to-last line is `ratio_tiny_vocab: <ours/TRL time>`, the last `ratio: <ours/TRL time>` for the real
vocabulary with 64 image tokens per image.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MALLOC_ENV,
    TRL_QUIET_CPU,
    Side,
    build_sft_step,
    count_params,
    fmt_ms,
    fmt_params,
    median,
    quiet_libraries,
    run_in_fresh_process,
    set_threads,
    sft_step,
    step_memory,
    trl_compact_lm_head,
    versions,
)

LR = 1e-5
TOTAL_STEPS = 1000  # length of both LR schedules (only their step cost matters here)


@dataclass(frozen=True)
class Config:
    name: str
    tokenizer: str  # "bpe" (~470 tokens, 512 lm_head rows) or "qwen" (151,665 tokens)
    image_size: int  # square images; 224 -> 8x8 = 64 image tokens, 448 -> 256
    headline: str | None = None  # the summary line this configuration's ratio goes to


@dataclass(frozen=True)
class Paths:
    model: str
    data: str


def batch_info(batch: dict[str, Any], image_token_id: int) -> dict[str, Any]:
    """Shapes that must agree between the two sides."""
    from datamodules.collate import IGNORE_INDEX

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
    from lightning_modules.vlm import LoraOptions, VLMOptions

    opts = VLMOptions(dtype="float32", lora=LoraOptions())
    model, processor, optimizer, scheduler = build_sft_step(paths.model, opts, lr=LR, total_steps=TOTAL_STEPS)
    data = VLMDataModule(
        model_path=paths.model, train_file=paths.data, batch_size=batch_size, shuffle=False, max_length=None
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))

    def step() -> float:
        return float(sft_step(model, batch, optimizer, scheduler))

    tok = processor.tokenizer
    info = batch_info(batch, tok.convert_tokens_to_ids("<|image_pad|>"))
    info.update(
        params=count_params(model),
        trainable=count_params(model, trainable_only=True),
        optimizer=type(optimizer).__name__,
        vocab=len(tok),
        embedding_rows=model.get_base_model().config.get_text_config().vocab_size,
        hidden=model.get_base_model().config.get_text_config().hidden_size,
    )
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
        records.append(
            {
                "prompt": [{"role": "user", "content": user["content"][len(IMAGE_MARKER) :]}],
                "completion": [{"role": "assistant", "content": assistant["content"]}],
                "images": [load_image(folder / p) for p in row["images"]],
            }
        )
    return records


def build_trl(paths: Paths, batch_size: int, workdir: str) -> list[Side]:
    """TRL's SFTTrainer on the same checkpoint and examples; a batch from its own dataloader and collator.

    Returns two sides sharing the trainer: stock TRL, and TRL with the compact (GPU-path) LM head.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    from datamodules.processor import load_processor
    from lightning_modules.vlm import LANGUAGE_LINEARS, LoraOptions

    processor = load_processor(paths.model)  # the image-only processor, registered with AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(paths.model, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraOptions()
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=LANGUAGE_LINEARS, bias="none"
    )
    args = SFTConfig(
        output_dir=str(Path(workdir) / "trl_out"),
        per_device_train_batch_size=batch_size,
        learning_rate=LR,
        max_steps=TOTAL_STEPS,
        max_length=None,
        **TRL_QUIET_CPU,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(trl_records(paths.data)),
        processing_class=processor,
        peft_config=peft_config,
    )
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

    def step_compact() -> float:
        with trl_compact_lm_head():
            return step()

    info = batch_info(batch, processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    info.update(
        params=count_params(model),
        trainable=count_params(model, trainable_only=True),
        optimizer=type(optimizer).__name__,
        vocab=len(processor.tokenizer),
        embedding_rows=model.get_base_model().config.get_text_config().vocab_size,
        hidden=model.get_base_model().config.get_text_config().hidden_size,
    )
    return [Side("TRL", step, info), Side("TRL-compact", step_compact, info)]


def build_side(name: str, paths: Paths, batch_size: int, workdir: str) -> Side:
    if name == "ours":
        return build_ours(paths, batch_size)
    return next(side for side in build_trl(paths, batch_size, workdir) if side.name == name)


# ---------------------------------------------------------------------------------------------------------- memory
def memory_worker(name: str, paths: Paths, batch_size: int, workdir: str, steps: int) -> dict[str, float | bool]:
    """In a fresh process: peak RSS increase of `steps` steps over the RSS right before them (after a warm-up)."""
    quiet_libraries()
    set_threads(1)
    side = build_side(name, paths, batch_size, workdir)
    return step_memory(side, steps)


# ------------------------------------------------------------------------------------------------------------ main
def prepare(workdir: Path, cfg: Config, batch_size: int, hidden: int) -> Paths:
    """The tiny model folder for the tokenizer (built once) and `batch_size` examples with this image size."""
    from assets.test_data import write_color_data
    from assets.tiny import build_tiny_vlm

    model_dir = workdir / f"model_{cfg.tokenizer}"
    if not (model_dir / "config.json").exists():
        build_tiny_vlm(model_dir, tokenizer=cfg.tokenizer, hidden=hidden)
    data = write_color_data(workdir / f"data_{cfg.image_size}", n=batch_size, fmt="messages", size=cfg.image_size)
    return Paths(str(model_dir), str(data))


def time_interleaved(sides: list[Side], warmup: int, rounds: int) -> tuple[dict[str, list[float]], list[float]]:
    """Warm-up, then rounds of A B C ...; per-side step times, and each side's first loss."""
    losses = [side.step() for side in sides]
    for _ in range(max(0, warmup - 1)):
        for side in sides:
            side.step()
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    for _ in range(rounds):
        for side in sides:
            t0 = time.perf_counter()
            side.step()
            times[side.name].append(time.perf_counter() - t0)
    return times, losses


def describe(cfg: Config, ours: dict[str, Any], trl: dict[str, Any]) -> str:
    keys = ["sequences", "padded_length", "real_tokens", "image_tokens", "supervised_tokens", "pixel_rows"]
    rows = [f"  {k:18s} ours {ours[k]:>6}   TRL {trl[k]:>6}" for k in keys]
    head = (
        f"[{cfg.name}] tokenizer {ours['vocab']:,} tokens (embedding/lm_head rows {ours['embedding_rows']:,}), "
        f"hidden {ours['hidden']}, {cfg.image_size}x{cfg.image_size} images; params ours "
        f"{fmt_params(ours['params'])} / TRL {fmt_params(trl['params'])}, trainable (LoRA) "
        f"{fmt_params(ours['trainable'])} / {fmt_params(trl['trainable'])}; optimizers {ours['optimizer']} / "
        f"{trl['optimizer']}"
    )
    return "\n".join([head, *rows])


SIDES = ("ours", "TRL", "TRL-compact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size (both vocabularies)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side before the timed rounds")
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds per configuration (0: per-config default)")
    parser.add_argument("--mem-steps", type=int, default=1, help="measured steps per memory process")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument(
        "--compact-memory", action="store_true", help="also measure TRL-compact's memory (+2 processes)"
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="add the real vocabulary with 448x448 images (256 image tokens per image); about +1.5 min",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()

    quiet_libraries()
    set_threads(1)
    import torch

    configs = [Config("tiny_vocab", "bpe", 224, "ratio_tiny_vocab"), Config("real_vocab", "qwen", 224, "ratio")]
    if args.large:
        configs.append(Config("real_vocab_256img", "qwen", 448))
    default_rounds = {"tiny_vocab": 20, "real_vocab": 5, "real_vocab_256img": 3}
    start = time.perf_counter()
    print(
        f"SFT step, ours vs TRL SFTTrainer; {versions('torch', 'transformers', 'trl', 'peft', 'lightning')}; "
        f"torch threads {torch.get_num_threads()}; batch {args.batch}; fp32; SDPA; LoRA r32/a64/dropout 0.05 on LM "
        f"linears; AdamW lr {LR:g}; times: median per step, interleaved in one process after "
        f"{args.warmup} warm-up steps; data preparation excluded on every side"
    )
    print(
        "TRL-compact = TRL with its fused LM head scoring supervised positions only, as on CUDA with Triton (not "
        "stock TRL on CPU; an estimate of the GPU gap)"
    )

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        workdir = Path(tmp)
        all_paths = {cfg.name: prepare(workdir, cfg, args.batch, args.hidden) for cfg in configs}
        for cfg in configs:
            sides = [build_ours(all_paths[cfg.name], args.batch), *build_trl(all_paths[cfg.name], args.batch, tmp)]
            print(describe(cfg, sides[0].info, sides[1].info))
            rounds = args.rounds or (max(3, default_rounds[cfg.name] // 2) if args.quick else default_rounds[cfg.name])
            times, losses = time_interleaved(sides, args.warmup, rounds)
            res: dict[str, Any] = {name: median(times[name]) for name in SIDES}
            res["ratio"] = res["ours"] / res["TRL"]
            res["ratio_compact"] = res["ours"] / res["TRL-compact"]
            print(
                f"  first-step loss    ours {losses[0]:.4f}   TRL {losses[1]:.4f}   (LoRA B = 0: the base model's; "
                f"TRL also supervises the '\\n' after <|im_end|>)"
            )
            print(
                f"  step time, median of {rounds}:  ours {fmt_ms(res['ours'])}   TRL {fmt_ms(res['TRL'])}   "
                f"TRL-compact {fmt_ms(res['TRL-compact'])}   ours/TRL {res['ratio']:.3f}   ours/TRL-compact "
                f"{res['ratio_compact']:.3f}",
                flush=True,
            )
            results[cfg.name] = res
            del sides
            gc.collect()

        if not args.no_memory:
            print(
                f"peak memory of a step: one fresh spawned process per side, peak RSS during {args.mem_steps} "
                f"step(s) minus RSS just before (after 1 warm-up step); glibc env {MALLOC_ENV}"
            )
            mem_sides = SIDES if args.compact_memory else SIDES[:2]
            for cfg in configs:
                mem = {
                    name: run_in_fresh_process(
                        memory_worker, name, all_paths[cfg.name], args.batch, tmp, args.mem_steps, env=MALLOC_ENV
                    )
                    for name in mem_sides
                }
                results[cfg.name]["mem"] = mem
                parts = [
                    f"{name} {mem[name]['step_mib']:.0f} MiB (first step {mem[name]['first_step_mib']:.0f}, "
                    f"RSS before {mem[name]['baseline_mib']:.0f})"
                    for name in mem_sides
                ]
                note = "" if all(m["reset"] for m in mem.values()) else "  [peak reset unsupported: lifetime peaks]"
                print(f"  [{cfg.name}] step peak RSS increase: " + ";  ".join(parts) + note, flush=True)

    print(
        "\n| configuration | ours step | TRL step | TRL-compact step | ours/TRL | ours/TRL-compact | peak +RSS ours "
        "| TRL | TRL-compact |\n|---|---|---|---|---|---|---|---|---|"
    )
    for cfg in configs:
        res = results[cfg.name]
        mem = [f"{res['mem'][n]['step_mib']:.0f} MiB" if n in res.get("mem", {}) else "-" for n in SIDES]
        print(
            f"| {cfg.name} | {fmt_ms(res['ours'])} | {fmt_ms(res['TRL'])} | {fmt_ms(res['TRL-compact'])} | "
            f"{res['ratio']:.3f} | {res['ratio_compact']:.3f} | {' | '.join(mem)} |"
        )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    for cfg in configs:
        if cfg.headline == "ratio_tiny_vocab":
            print(f"ratio_tiny_vocab: {results[cfg.name]['ratio']:.3f}")
    for cfg in configs:
        if cfg.headline == "ratio":
            print(f"ratio: {results[cfg.name]['ratio']:.3f}")


if __name__ == "__main__":
    main()
