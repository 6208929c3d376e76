"""GRPO step benchmark: our GRPOModule step against TRL 1.16's GRPOTrainer step, same tiny Qwen2.5-VL, same prompts.

What is measured, per configuration, on CPU with one torch thread:
- time per optimisation step, median over interleaved steps (ours, TRL, TRL-compact, ours, ...) after a warm-up
  step per side, all in ONE process: 6 timed steps per side, except stock TRL with the real vocabulary, where a step
  takes 15-20 s on one busy core: it takes part in the first 2 rounds only (ours and TRL-compact go on alternating). A step is everything from fetching the next prompt batch to the optimizer step:
  * ours: the next batch from `VLMDataModule(prompt_only=True)`'s dataloader (image loading, processor, left
    padding), then `GRPOModule.training_step` as written: rollouts through the shared-prefill sampler (G per prompt
    from one prefill), exact-match rewards, group advantages, reference log-probs with the LoRA adapter disabled,
    policy log-probs (vision tower once per prompt, lm_head on completion tokens only), `grpo_loss`, backward,
    gradient clipping (norm 1.0), AdamW step, zero_grad, LR-schedule step, and the metric computations of
    `log_rollout`. No Lightning Trainer: the module is driven directly. `configure_model` and
    `configure_optimizers` are the module's own (a stub trainer supplies `estimated_stepping_batches` and an
    advancing `global_step`); the few LightningModule methods that need a real Trainer are replaced on the instance
    by what Lightning runs for fp32 on one CPU device: `optimizers()` / `lr_schedulers()` return the optimizer and
    schedule, `manual_backward(loss)` is `loss.backward()`, `clip_gradients` is `torch.nn.utils.clip_grad_norm_`
    over the optimizer's parameters, and `log` / `log_dict` only keep the values (no logger);
  * TRL: the next batch from `GRPOTrainer.get_train_dataloader()` (G copies of each prompt row, PIL images), then
    `GRPOTrainer.training_step` (generation with `model.generate` on the G-fold repeated prompts, rewards,
    advantages, reference log-probs with the adapter disabled, loss, backward), then what `Trainer.train` runs per
    step: `accelerator.clip_grad_norm_` (1.0), `optimizer.step()`, `lr_scheduler.step()`, `model.zero_grad()`;
  * TRL-compact (extra, not stock TRL on CPU): the same TRL step with its fused LM head scoring completion positions
    only in the log-prob passes, as TRL 1.16 does where Triton runs (CUDA / XPU); on CPU it projects every position
    of every sequence through lm_head, which dominates its step with the real vocabulary. This row estimates what is
    left of the gap on a GPU. Shares the trainer (model, optimizer, data) with the TRL row.
- peak memory of a step, ours and TRL (TRL-compact with --compact-memory), each in a fresh spawned process: peak RSS during a step minus RSS just before it (after
  one warm-up step, so AdamW state exists on both sides); see bench/common.py.

Same on both sides: the model folder (same initial weights), LoRA r 16 / alpha 32 / dropout 0.05 on the
language-model linears, fp32, SDPA, no gradient checkpointing, the prompts (one-colour PNGs, "What color is the
image? Output the answer using one word." -> colour word; TRL gets conversational prompts with the same PIL images),
the exact-match reward (`datamodules.scoring` "exact"), G = 8, prompts per step, max completion length, temperature
0.9, top-p 1.0, top-k 50, beta 0.04, epsilon 0.2, loss type "grpo", group-std reward scaling, mu = 1, AdamW (lr 1e-5,
betas (0.9, 0.95), weight decay 0.1), warmup-cosine schedule. The tiny model is briefly fine-tuned first (bench/common.py
`build_trained_tiny_vlm`) so that it answers one word, emits `<|im_end|>` and is right sometimes: a random model never
stops (both sides would always decode max_completion_length tokens) and an exact-match reward would always be 0.
Differences that remain: TRL samples with the model in train mode (LoRA dropout active), ours in eval mode; TRL
suppresses only `<|image_pad|>` while sampling, ours all five vision special tokens; TRL stops on the generation
config's EOS (`<|im_end|>`), ours also on `<|endoftext|>`. Completions differ step by step (different RNGs), so the
mean completion length and reward of each side are printed.

Configurations: tiny vocabulary (BPE, ~470 tokens, 512 lm_head rows) and the real Qwen2.5 vocabulary (151,665
tokens, 151,680 rows), both hidden 64, 224x224 images (64 image tokens per prompt).

    .venv/bin/python -m bench.grpo_step                 # both vocabularies (about 3 minutes on 2 cores)
    .venv/bin/python -m bench.grpo_step --no-memory     # timings only
    .venv/bin/python -m bench.grpo_step --configs tiny_vocab --prompts 4

The second-to-last line is `ratio_tiny_vocab: <ours/TRL time>`, the last `ratio: <ours/TRL time>` for the real
vocabulary.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MALLOC_ENV,
    TRL_QUIET_CPU,
    Side,
    build_trained_tiny_vlm,
    count_params,
    describe_vlm,
    fmt_ms,
    fmt_params,
    median,
    quiet_libraries,
    run_in_fresh_process,
    set_threads,
    step_memory,
    trl_compact_lm_head,
    versions,
)

LR = 1e-5
TOTAL_STEPS = 1000  # length of both LR schedules (only their step cost matters here)
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


@dataclass(frozen=True)
class Settings:
    """Everything both sides share, picklable for the memory processes."""

    model: str
    data: str
    prompts: int  # prompts per step
    group: int  # G
    max_new_tokens: int
    workdir: str
    beta: float = 0.04
    temperature: float = 0.9
    top_p: float = 1.0
    top_k: int = 50


class StubTrainer:
    """The Trainer attributes GRPOModule reads outside the methods replaced in `drive_without_trainer`: the schedule
    length, step counter, rank and world size, Lightning's one-device strategy (its `all_gather`, which the step's group
    counts go through, returns its input) and the train dataloader that group filtering refills from."""

    def __init__(self, total_steps: int, train_dataloader: Any = None) -> None:
        from lightning.pytorch.strategies import SingleDeviceStrategy

        self.strategy = SingleDeviceStrategy("cpu")
        self.train_dataloader = train_dataloader
        self.estimated_stepping_batches = total_steps
        self.global_step = 0
        self.global_rank = 0
        self.world_size = 1
        self.is_global_zero = True
        self.logger = None
        self.loggers: list[Any] = []


def drive_without_trainer(module, optimizer, scheduler) -> dict[str, Any]:
    """Replace, on this instance only, the LightningModule methods that need a real Trainer (see the docstring).

    Returns the dict that `log` / `log_dict` fill (latest value per key)."""
    import torch

    logged: dict[str, Any] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    module.optimizers = lambda use_pl_optimizer=True: optimizer
    module.lr_schedulers = lambda: scheduler
    module.manual_backward = lambda loss, *args, **kwargs: loss.backward(*args, **kwargs)

    def clip_gradients(opt, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    module.clip_gradients = clip_gradients
    module.log = lambda name, value, *args, **kwargs: logged.__setitem__(name, value)
    module.log_dict = lambda values, *args, **kwargs: logged.update(values)
    return logged


def endless(make_loader: Callable[[], Any]) -> Iterator[Any]:
    """Batches from a fresh pass over the loader whenever the previous pass ends (data loading stays in every step)."""
    while True:
        yield from make_loader()


# ------------------------------------------------------------------------------------------------------------ ours
def build_ours(s: Settings) -> Side:
    """GRPOModule with its own configure_model / configure_optimizers, driven directly; VLMDataModule prompt batches."""
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.grpo import GRPOConfig, GRPOModule
    from lightning_modules.sampling import SamplingConfig
    from lightning_modules.training import OptimConfig
    from lightning_modules.vlm import LoraOptions, VLMOptions

    opts = VLMOptions(dtype="float32", lora=LoraOptions(r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"]))
    sampling = SamplingConfig(
        k=s.group,
        max_new_tokens=s.max_new_tokens,
        do_sample=True,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        seed=42,
    )
    grpo = GRPOConfig(
        beta=s.beta,
        epsilon_low=0.2,
        epsilon_high=0.2,
        loss_type="grpo",
        scale_rewards=True,
        num_iterations=1,
        grad_accum=1,
        max_grad_norm=1.0,
    )
    optim = OptimConfig(lr=LR, weight_decay=0.1, adam_betas=(0.9, 0.95), warmup_ratio=0.1)
    module = GRPOModule(
        s.model, vlm=opts, sampling=sampling, grpo=grpo, optim=optim, rewards={"exact": 1.0}, log_completions_every=0
    )
    module.configure_model()
    trainer = StubTrainer(TOTAL_STEPS)
    module.trainer = trainer
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    logged = drive_without_trainer(module, optimizer, scheduler)
    module.model.train()
    data = VLMDataModule(
        model_path=s.model, train_file=s.data, batch_size=s.prompts, shuffle=True, prompt_only=True, max_length=None
    )
    data.setup("fit")
    batches = endless(data.train_dataloader)
    history: list[dict[str, float]] = []

    def step() -> float:
        batch = next(batches)
        loss = module.training_step(batch, trainer.global_step)
        trainer.global_step += 1
        history.append(
            {
                "completion_length": float(logged["train/completion_length"]),
                "reward": float(logged["train/reward/mean"]),
                "kl": float(logged["train/kl"]),
            }
        )
        return float(loss)

    def stats() -> dict[str, float]:
        return {k: sum(h[k] for h in history) / len(history) for k in history[0]} if history else {}

    info = {
        "params": count_params(module.model),
        "trainable": count_params(module.model, trainable_only=True),
        "optimizer": type(optimizer).__name__,
        "describe": describe_vlm(module.model, module.processor),
    }
    return Side("ours", step, info, stats)


# ------------------------------------------------------------------------------------------------------------- TRL
def trl_records(data_file: str, processor) -> list[dict[str, Any]]:
    """Our problem/solution/image rows as TRL conversational prompts with the same PIL images (smart-resized with
    the processor's pixel bounds, as our data module does: a no-op at 224x224)."""
    import json

    from datamodules.images import load_image
    from datamodules.processor import pixel_bounds

    folder = Path(data_file).parent
    min_pixels, max_pixels = pixel_bounds(processor)
    return [
        {
            "prompt": [{"role": "user", "content": row["problem"]}],
            "solution": row["solution"],
            "image": load_image(folder / row["image"], min_pixels, max_pixels),
        }
        for row in json.loads(Path(data_file).read_text())
    ]


def exact_reward(completions: list[list[dict[str, str]]], solution: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion exact-matches the solution (our `exact` scorer), else 0.0."""
    from datamodules.scoring import get_scorer

    score = get_scorer("exact")
    return [float(bool(score(c[0]["content"], sol))) for c, sol in zip(completions, solution)]


def build_trl(s: Settings) -> list[Side]:
    """TRL's GRPOTrainer on the same checkpoint, prompts and settings; batches from its own dataloader.

    Returns two sides sharing the trainer: stock TRL, and TRL with the compact (GPU-path) LM head."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText
    from trl import GRPOConfig, GRPOTrainer

    from datamodules.processor import load_processor
    from lightning_modules.vlm import LANGUAGE_LINEARS

    processor = load_processor(s.model)  # the image-only processor, registered with AutoProcessor
    model = AutoModelForImageTextToText.from_pretrained(s.model, dtype=torch.float32, attn_implementation="sdpa")
    peft_config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LANGUAGE_LINEARS,
        bias="none",
    )
    args = GRPOConfig(
        output_dir=str(Path(s.workdir) / "trl_grpo"),
        per_device_train_batch_size=s.prompts * s.group,
        num_generations=s.group,
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        beta=s.beta,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        learning_rate=LR,
        warmup_steps=TOTAL_STEPS // 10,
        max_grad_norm=1.0,
        max_steps=TOTAL_STEPS,
        log_completions=False,
        **TRL_QUIET_CPU,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[exact_reward],
        args=args,
        train_dataset=Dataset.from_list(trl_records(s.data, processor)),
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=TOTAL_STEPS)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train before each step
    model = trainer.model
    model.train()
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    batches = endless(trainer.get_train_dataloader)
    metrics = trainer._metrics["train"]
    keys = {"completion_length": "completions/mean_length", "reward": "reward", "kl": "kl"}
    info = {
        "params": count_params(model),
        "trainable": count_params(model, trainable_only=True),
        "optimizer": type(optimizer).__name__,
        "describe": describe_vlm(model, processor),
    }

    def make_side(name: str, compact: bool) -> Side:
        history: list[dict[str, float]] = []

        def step() -> float:
            batch = next(batches)
            with trl_compact_lm_head() if compact else contextlib.nullcontext():
                loss = trainer.training_step(model, batch, None)
            trainer.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            model.zero_grad()
            history.append({k: float(metrics[v][-1]) for k, v in keys.items() if metrics.get(v)})
            return float(loss)

        def stats() -> dict[str, float]:
            return {k: sum(h[k] for h in history) / len(history) for k in history[0]} if history else {}

        return Side(name, step, info, stats)

    return [make_side("TRL", False), make_side("TRL-compact", True)]


def build_side(name: str, s: Settings) -> Side:
    if name == "ours":
        return build_ours(s)
    return next(side for side in build_trl(s) if side.name == name)


# ---------------------------------------------------------------------------------------------------------- memory
def memory_worker(name: str, s: Settings, steps: int) -> dict[str, float | bool]:
    """In a fresh process: peak RSS increase of `steps` steps over the RSS right before them (after a warm-up)."""
    quiet_libraries()
    set_threads(1)
    import torch

    torch.manual_seed(0)
    side = build_side(name, s)
    return step_memory(side, steps)


# ------------------------------------------------------------------------------------------------------------ main
CONFIGS = {"tiny_vocab": "bpe", "real_vocab": "qwen"}
SIDES = ("ours", "TRL", "TRL-compact")


def prepare(workdir: Path, tokenizer: str, args: argparse.Namespace) -> tuple[str, str]:
    """The colour-tuned tiny model for this tokenizer and the GRPO prompts (problem/solution/image)."""
    from assets.test_data import write_color_data

    train = write_color_data(workdir / "sft_data", n=16, fmt="messages", size=args.image_size)
    model = build_trained_tiny_vlm(workdir / f"model_{tokenizer}", train, tokenizer=tokenizer, hidden=args.hidden)
    data = write_color_data(workdir / "grpo_data", n=max(16, 2 * args.prompts), fmt="problem", size=args.image_size)
    return str(model), str(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="max completion length (answers: one word)")
    parser.add_argument("--image-size", type=int, default=224, help="square image side (224 -> 64 image tokens)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size")
    parser.add_argument("--rounds", type=int, default=6, help="timed steps of ours and TRL-compact")
    parser.add_argument(
        "--trl-rounds",
        type=int,
        default=0,
        help="timed steps of stock TRL (0: 6 tiny vocab, 2 real vocab, where one takes about 20 s)",
    )
    parser.add_argument("--mem-steps", type=int, default=1, help="measured steps per memory process")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument(
        "--compact-memory", action="store_true", help="also measure TRL-compact's memory (+2 processes)"
    )
    args = parser.parse_args()

    quiet_libraries()
    set_threads(1)
    import torch

    default_trl_rounds = {"tiny_vocab": 6, "real_vocab": 2}
    start = time.perf_counter()
    print(
        f"GRPO step, ours (GRPOModule.training_step, driven without a Trainer) vs TRL GRPOTrainer; "
        f"{versions('torch', 'transformers', 'trl', 'peft', 'lightning')}; torch threads {torch.get_num_threads()}; "
        f"{args.prompts} prompts x G {args.group} per step; max completion length {args.max_new_tokens}; "
        f"{args.image_size}x{args.image_size} images; fp32; SDPA; LoRA r{LORA['r']}/a{LORA['alpha']}/dropout "
        f"{LORA['dropout']} on LM linears; beta 0.04; T 0.9, top-p 1.0, top-k 50; AdamW lr {LR:g}; times: median per "
        f"step, interleaved in one process after 1 warm-up step per side, data loading included on both sides"
    )
    print(
        "TRL-compact = TRL with its fused LM head scoring completion positions only, as on CUDA with Triton (not "
        "stock TRL on CPU; an estimate of the GPU gap)"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        settings = {}
        for name in args.configs:
            model, data = prepare(Path(tmp), CONFIGS[name], args)
            settings[name] = Settings(model, data, args.prompts, args.group, args.max_new_tokens, tmp)
        for name in args.configs:
            torch.manual_seed(0)
            sides = [build_ours(settings[name]), *build_trl(settings[name])]
            info = sides[0].info
            print(
                f"[{name}] {info['describe']}; trainable (LoRA) ours {fmt_params(info['trainable'])} / TRL "
                f"{fmt_params(sides[1].info['trainable'])}; optimizers {info['optimizer']} / "
                f"{sides[1].info['optimizer']}",
                flush=True,
            )
            for side in sides:  # warm-up
                side.step()
            rounds = args.rounds
            wanted = {side.name: rounds for side in sides}
            wanted["TRL"] = args.trl_rounds or default_trl_rounds[name]
            times: dict[str, list[float]] = {side.name: [] for side in sides}
            for r in range(rounds):  # ours, TRL, TRL-compact, ours, ...; stock TRL only in the first rounds
                for side in sides:
                    if r >= wanted[side.name]:
                        continue
                    t0 = time.perf_counter()
                    side.step()
                    times[side.name].append(time.perf_counter() - t0)
            res: dict[str, Any] = {side.name: median(times[side.name]) for side in sides}
            res["ratio"] = res["ours"] / res["TRL"]
            res["ratio_compact"] = res["ours"] / res["TRL-compact"]
            for side in sides:
                st = side.stats()
                print(
                    f"  {side.name:11s} step {fmt_ms(res[side.name]):>10s} (all: "
                    f"{', '.join(f'{t * 1e3:.0f}' for t in times[side.name])} ms); over its steps: mean completion "
                    f"length {st.get('completion_length', float('nan')):.2f} tokens, reward "
                    f"{st.get('reward', float('nan')):.3f}, KL {st.get('kl', float('nan')):.2e}"
                )
            print(
                f"  step time, medians of {' / '.join(str(len(times[s.name])) for s in sides)} steps: ours/TRL "
                f"{res['ratio']:.3f}   ours/TRL-compact {res['ratio_compact']:.3f}",
                flush=True,
            )
            results[name] = res
            del sides
            gc.collect()

        if not args.no_memory:
            print(
                f"peak memory of a step: one fresh spawned process per side, peak RSS during {args.mem_steps} "
                f"step(s) minus RSS just before (after 1 warm-up step); glibc env {MALLOC_ENV}"
            )
            mem_sides = SIDES if args.compact_memory else SIDES[:2]
            for name in args.configs:
                mem = {
                    side: run_in_fresh_process(memory_worker, side, settings[name], args.mem_steps, env=MALLOC_ENV)
                    for side in mem_sides
                }
                results[name]["mem"] = mem
                parts = [
                    f"{side} {m['step_mib']:.0f} MiB (first step {m['first_step_mib']:.0f}, RSS before "
                    f"{m['baseline_mib']:.0f})"
                    for side, m in mem.items()
                ]
                note = "" if all(m["reset"] for m in mem.values()) else "  [peak reset unsupported: lifetime peaks]"
                print(f"  [{name}] step peak RSS increase: " + ";  ".join(parts) + note, flush=True)

    print(
        "\n| configuration | ours step | TRL step | TRL-compact step | ours/TRL | ours/TRL-compact | peak +RSS ours "
        "| TRL | TRL-compact |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name in args.configs:
        res = results[name]
        mem = [f"{res['mem'][n]['step_mib']:.0f} MiB" if n in res.get("mem", {}) else "-" for n in SIDES]
        print(
            f"| {name} | {fmt_ms(res['ours'])} | {fmt_ms(res['TRL'])} | {fmt_ms(res['TRL-compact'])} | "
            f"{res['ratio']:.3f} | {res['ratio_compact']:.3f} | {' | '.join(mem)} |"
        )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    if "tiny_vocab" in results:
        print(f"ratio_tiny_vocab: {results['tiny_vocab']['ratio']:.3f}")
    if "real_vocab" in results:
        print(f"ratio: {results['real_vocab']['ratio']:.3f}")


if __name__ == "__main__":
    main()
