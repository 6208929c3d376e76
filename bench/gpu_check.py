"""GPU check: our SFT, QLoRA, rollout and GRPO paths on real-shaped models (random weights) on one CUDA GPU, timed
and measured, as a markdown table plus a JSON file.

    bash scripts/gpu_check.sh                    # installs missing packages from wheels/, then runs the line below
    python -m bench.gpu_check --out runs/gpu_check/gpu_check.json
    python -m bench.gpu_check --dry-run          # no CUDA: every configuration on the meta device, the batches, the plan
    python -m bench.gpu_check --models 7b --modes lora,rollout --steps 3

Models (`--models`, default 3b,7b,qwen3_4b): the public Qwen2.5-VL-3B / -7B and Qwen3-VL-4B configs
(bench/architectures.py) with random bf16 weights built directly on the GPU, saved once to a temporary folder and
loaded back through our `build_vlm`, as training loads a checkpoint (QLoRA needs transformers' bitsandbytes loading
path). Inputs: one image question with about 1,024 image tokens (896x896 for Qwen2.5-VL's 28-pixel merged tokens,
1024x1024 for Qwen3-VL's 32-pixel ones) and the real Qwen2.5 tokenizer. Modes (`--modes`):
- lora: SFTModule's step (bench/common.py `sft_step`: `supervised_loss`, backward, AdamW) with the official LoRA
  (r 32, alpha 64, dropout 0.05, language-model linears) and gradient checkpointing on bf16 weights;
- qlora: the same on nf4 weights (double quantization, bf16 compute, vision tower and lm_head unquantized); skipped
  with a line saying so when bitsandbytes is missing;
- rollout: the shared-prefill sampler (`lightning_modules.sampling.sample`) on 16 prompts x k 8 with 128 new tokens at
  forced length: no stop tokens are passed, so every completion is exactly 128 tokens and the work per call is fixed;
- grpo: `GRPOModule.training_step` driven without a Trainer (bench/grpo_step.py's stub): G 8 answers for each of 2
  prompts (stop tokens on, as in training; random weights rarely stop), exact-match rewards, reference log-probs with
  the adapter disabled, the policy pass, `grpo_loss`, backward, clipping, AdamW.
Each mode runs 1 warm-up + `--steps` timed calls (default 2). Reported: peak `torch.cuda.max_memory_allocated` (and
the allocator's reserved peak) over them, memory after loading, median time, tokens/s (SFT: every token of the batch,
image tokens included; rollout: generated tokens; GRPO: sampled completion tokens, each scored by the reference and
trained on). The model is as `build_vlm` returns it, not cast by Lightning's `bf16-true`: LoRA adapters are fp32
(peft's default) and, under QLoRA, peft's `prepare_model_for_kbit_training` upcasts every non-4-bit weight to fp32;
`bench/memory_estimate.py --measured` predicts these rows and prints them side by side.

Time: about 5-6 minutes on an H100/H200 for three models and four modes; nothing starts after `--budget-s` (450 s)
and a line says what was skipped. The JSON is rewritten after every row. Without CUDA (and without --dry-run) it
prints one skip line and exits 0. `--device cpu --models tiny,tiny_qwen3` runs every code path on CPU with 2-layer
models (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as `python bench/<name>.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.architectures import (  # noqa: E402
    ARCHS,
    IMAGE_TOKEN_IDS,
    build_processor,
    describe_batch,
    image_side,
    make_batch,
    meta_model,
    part_counts,
    resolve,
    save_random_checkpoint,
)
from bench.common import fmt_params, median, quiet_libraries, versions  # noqa: E402

if TYPE_CHECKING:
    from lightning_modules.vlm import VLMOptions

MODES = ("lora", "qlora", "rollout", "grpo")


@dataclass
class Settings:
    """What every mode shares (the command line)."""

    steps: int = 2
    batch: int = 1  # SFT sequences per step
    image_tokens: int = 1024
    rollout_prompts: int = 16  # the difficulty estimate's batch (official eval batch 16)
    prompts: int = 2  # GRPO prompts per step (the paper's per-GPU micro-batch)
    k: int = 8
    max_new_tokens: int = 128
    gradient_checkpointing: bool = True
    device: str = "cuda"
    budget_s: float = 450.0


def lora_options(qlora: bool, s: Settings) -> VLMOptions:
    """The builder options of every mode: the official LoRA, gradient checkpointing, bf16 or nf4 weights."""
    from lightning_modules.vlm import LoraOptions, QuantOptions, VLMOptions

    quant = QuantOptions() if qlora else None
    return VLMOptions(lora=LoraOptions(), qlora=quant, gradient_checkpointing=s.gradient_checkpointing)


def describe_mode(mode: str, s: Settings) -> str:
    lora = (
        f"LoRA r{lora_options(False, s).lora.r} on language linears, gradient checkpointing {s.gradient_checkpointing}"
    )
    return {
        "lora": f"SFT step, bf16 weights, {lora}, {s.batch} sequence(s)",
        "qlora": f"SFT step, nf4 language-model linears (the other weights upcast to fp32 by peft), {lora}",
        "rollout": f"shared-prefill sampling, {s.rollout_prompts} prompts x k {s.k}, {s.max_new_tokens} new tokens "
        "forced (no stop tokens)",
        "grpo": f"GRPOModule.training_step, {s.prompts} prompts x G {s.k}, <= {s.max_new_tokens} new tokens, beta 0.04",
    }[mode]


# ------------------------------------------------------------------------------------------------------- dry run
def dry_run(models: list[str], modes: list[str], s: Settings) -> list[dict[str, Any]]:
    """Every configuration on the meta device (no weights allocated), parameter counts per part, the batches each
    mode would use (real tokenizer and processor) and the plan. Returns one dict per model (for tests)."""
    out = []
    for key in models:
        arch = ARCHS[key]
        model = meta_model(key)
        counts = part_counts(model)
        devices = sorted({p.device.type for p in model.parameters()})
        del model
        side = image_side(key, s.image_tokens)
        processor = build_processor(arch.family, side * side)
        check_token_ids(processor.tokenizer)
        sft = describe_batch(make_batch(processor, side, s.batch))
        prompt = describe_batch(make_batch(processor, side, 1, generation=True))
        released = f"; released {arch.released_params / 1e9:.2f} B" if arch.released_params else ""
        print(
            f"{arch.name} ({arch.family}): {fmt_params(counts['total'])} parameters on {devices}{released}: vision "
            f"{fmt_params(counts['vision'])}, language {fmt_params(counts['language'])}, lm_head "
            f"{fmt_params(counts['lm_head']) if counts['lm_head'] else 'tied to the embeddings'}; {side}x{side} image "
            f"-> {sft['image_tokens'] // s.batch} image tokens; SFT batch {sft}; prompt {prompt['tokens']} tokens"
        )
        for mode in modes:
            print(f"  plan {mode}: {describe_mode(mode, s)}; 1 warm-up + {s.steps} timed")
        out.append({"model": key, "parts": counts, "devices": devices, "sft_batch": sft, "prompt": prompt})
    print("dry run ok (no CUDA used, no weights allocated)")
    return out


def check_token_ids(tokenizer) -> None:
    """The configs' special ids must be the tokenizer's (a mismatch would silently break image positions)."""
    names = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>"}
    names.update(vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>")
    for key, token in names.items():
        if tokenizer.convert_tokens_to_ids(token) != IMAGE_TOKEN_IDS[key]:
            sys.exit(f"tokenizer id of {token} is {tokenizer.convert_tokens_to_ids(token)}, configs say {key}")


# ---------------------------------------------------------------------------------------------------- measuring
class Meter:
    """Wall time and peak memory on one device (CUDA: allocator statistics, synchronised timing; CPU: time only)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.cuda = torch, device == "cuda"

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def allocated_gib(self) -> float:
        return self.torch.cuda.memory_allocated() / 2**30 if self.cuda else float("nan")

    def peaks(self) -> dict[str, float]:
        if not self.cuda:
            return {"peak_gib": float("nan"), "reserved_gib": float("nan")}
        cuda = self.torch.cuda
        return {"peak_gib": cuda.max_memory_allocated() / 2**30, "reserved_gib": cuda.max_memory_reserved() / 2**30}

    def repeat(self, fn: Callable[[], Any], steps: int) -> tuple[float, Any]:
        """1 warm-up + `steps` timed calls: (median seconds, last result)."""
        times, result = [], None
        for i in range(steps + 1):
            if self.cuda:
                self.torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = fn()
            if self.cuda:
                self.torch.cuda.synchronize()
            if i > 0:
                times.append(time.perf_counter() - t0)
        return median(times), result


def on(device: str, batch: dict[str, Any]) -> dict[str, Any]:
    from lightning.pytorch.utilities import move_data_to_device

    return move_data_to_device(batch, device)


def sft_row(model, optimizer, scheduler, batch: dict[str, Any], s: Settings, meter: Meter) -> dict[str, Any]:
    from bench.common import sft_step

    inputs = on(s.device, batch)
    meter.reset()
    step_s, loss = meter.repeat(lambda: sft_step(model, inputs, optimizer, scheduler), s.steps)
    tokens = int(batch["attention_mask"].sum())
    return {**meter.peaks(), "time_s": step_s, "tokens": tokens, "tokens_per_s": tokens / step_s, "loss": float(loss)}


def rollout_row(model, processor, prompts: dict[str, Any], s: Settings, meter: Meter) -> dict[str, Any]:
    from datamodules.collate import model_inputs
    from lightning_modules.sampling import SamplingConfig, banned_token_ids, inference_mode, item_generator, sample

    cfg = SamplingConfig(k=s.k, max_new_tokens=s.max_new_tokens)
    inputs, banned = on(s.device, model_inputs(prompts)), banned_token_ids(processor)

    def call() -> list[list[list[int]]]:
        generators = [item_generator(cfg.seed, item, s.device) for item in prompts["ids"]]
        with inference_mode(model):
            return sample(model, inputs, cfg, stop_ids=[], banned_ids=banned, generators=generators)

    meter.reset()
    call_s, out = meter.repeat(call, s.steps)
    generated = sum(len(c) for item in out for c in item)
    return {**meter.peaks(), "time_s": call_s, "tokens": generated, "tokens_per_s": generated / call_s}


def grpo_row(model, processor, prompts: dict[str, Any], s: Settings, meter: Meter) -> dict[str, Any]:
    from bench.grpo_step import StubTrainer, drive_without_trainer
    from lightning_modules.grpo import GRPOModule
    from lightning_modules.sampling import SamplingConfig

    sampling = SamplingConfig(k=s.k, max_new_tokens=s.max_new_tokens)
    module = GRPOModule(
        "random weights (in memory)", lora_options(False, s), sampling, log_completions_every=0, rollout_log=None
    )
    module.model, module.processor = model, processor  # configure_model keeps a model that is already there
    module.to(s.device)  # sets the module's device (the rollout generators live there); the weights are there already
    trainer = StubTrainer(1000)  # its one-device strategy's all_gather returns its input
    module.trainer = trainer
    conf = module.configure_optimizers()
    logged = drive_without_trainer(module, conf["optimizer"], conf["lr_scheduler"]["scheduler"])
    batch = on(s.device, prompts)

    def step() -> float:
        loss = module.training_step(batch, trainer.global_step)
        trainer.global_step += 1
        return float(loss)

    meter.reset()
    step_s, loss = meter.repeat(step, s.steps)
    completion = float(logged["train/completion_length"]) * len(prompts["ids"]) * s.k  # the last step's mean length
    module.model = None  # the caller frees the model
    return {**meter.peaks(), "time_s": step_s, "tokens": completion, "tokens_per_s": completion / step_s, "loss": loss}


def failure(err: BaseException) -> str:
    """A row's status for an exception (the traceback goes to the log)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "OOM"
    traceback.print_exception(err)
    return f"error: {type(err).__name__}: {str(err)[:200]}"


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One mode's row; an OOM or any other error becomes the row's status, and the check goes on (a one-shot GPU
    run must report every mode, not stop at the first failure)."""
    try:
        return {"status": "ok", **fn()}
    except Exception as err:
        return {"status": failure(err)}


def run_model(
    key: str, modes: list[str], s: Settings, workdir: Path, deadline: float, emit: Callable[[dict[str, Any]], None]
) -> None:
    """Save the random checkpoint, then: bf16 LoRA model -> lora, rollout, grpo; nf4 model -> qlora."""
    from bench.common import build_sft_step

    arch, meter = ARCHS[key], Meter(s.device)
    side = image_side(key, s.image_tokens)
    processor = build_processor(arch.family, side * side)
    sft_batch = make_batch(processor, side, s.batch)
    rollout_prompts = make_batch(processor, side, s.rollout_prompts, generation=True)
    grpo_prompts = make_batch(processor, side, s.prompts, generation=True)
    shape = {"image_tokens": describe_batch(sft_batch)["image_tokens"] // s.batch, "k": s.k}
    shape.update(seq_len=int(sft_batch["attention_mask"][0].sum()), prompt_len=int(grpo_prompts["input_ids"].shape[1]))
    base = {"model": key, "name": arch.name, "shape": shape, "options": asdict(lora_options(False, s))}
    folder = workdir / key
    t0 = time.perf_counter()
    save_random_checkpoint(key, folder, s.device, side * side)
    print(f"[{key}] random bf16 checkpoint saved in {time.perf_counter() - t0:.0f} s", flush=True)

    def late(mode: str) -> bool:
        if time.perf_counter() < deadline:
            return False
        emit({**base, "mode": mode, "status": f"skipped: time budget (--budget-s {s.budget_s:.0f}) spent"})
        return True

    bf16_modes = [m for m in modes if m != "qlora" and not late(m)]
    if bf16_modes:
        meter.reset()
        t0, before = time.perf_counter(), meter.allocated_gib()
        try:
            model, loaded, optimizer, scheduler = build_sft_step(str(folder), lora_options(False, s), device=s.device)
        except Exception as err:  # the bf16 modes cannot run: say so for each, then try QLoRA
            status = f"not loaded: {failure(err)}"
            for mode in bf16_modes:
                emit({**base, "mode": mode, "status": status})
            bf16_modes = []
    if bf16_modes:
        extra = {
            "weights_gib": meter.allocated_gib() - before,
            "before_gib": before,
            "load_s": time.perf_counter() - t0,
        }
        calls = {
            "lora": lambda: sft_row(model, optimizer, scheduler, sft_batch, s, meter),
            "rollout": lambda: rollout_row(model, loaded, rollout_prompts, s, meter),
            "grpo": lambda: grpo_row(model, loaded, grpo_prompts, s, meter),
        }
        for mode in bf16_modes:
            if not late(mode):
                emit({**base, "mode": mode, **extra, **guarded(calls[mode])})
            if mode == "lora":  # free the SFT optimizer state before the next mode
                optimizer = scheduler = None
                model.zero_grad(set_to_none=True)
        del model, loaded, optimizer, scheduler, calls
    if "qlora" in modes and not late("qlora"):
        options = asdict(lora_options(True, s))
        if importlib.util.find_spec("bitsandbytes") is None:
            status = "skipped: bitsandbytes is not installed (scripts/gpu_check.sh installs it from wheels/)"
            emit({**base, "mode": "qlora", "options": options, "status": status})
        else:
            emit({**base, "mode": "qlora", "options": options, **guarded(lambda: qlora_row(folder, sft_batch, s))})
    shutil.rmtree(folder, ignore_errors=True)
    meter.reset()


def qlora_row(folder: Path, batch: dict[str, Any], s: Settings) -> dict[str, Any]:
    from bench.common import build_sft_step

    meter = Meter(s.device)
    meter.reset()
    t0, before = time.perf_counter(), meter.allocated_gib()  # before: anything an earlier mode left (should be 0)
    model, _, optimizer, scheduler = build_sft_step(str(folder), lora_options(True, s), device=s.device)
    extra = {"weights_gib": meter.allocated_gib() - before, "before_gib": before, "load_s": time.perf_counter() - t0}
    try:
        return {**extra, **sft_row(model, optimizer, scheduler, batch, s, meter)}
    finally:
        del model, optimizer, scheduler


# --------------------------------------------------------------------------------------------------------- output
def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (memory in GiB, time in seconds)."""

    def num(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        return "-" if value is None or value != value else format(value, fmt)

    lines = [
        "| model | mode | status | weights | peak allocated | peak reserved | time (s) | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [num(r, "weights_gib", ".2f"), num(r, "peak_gib", ".2f"), num(r, "reserved_gib", ".2f")]
        cells += [num(r, "time_s", ".3f"), num(r, "tokens_per_s", ",.0f")]
        lines.append(f"| {r['name']} | {r['mode']} | {r['status']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="3b,7b,qwen3_4b", help=f"comma-separated presets: {', '.join(ARCHS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=Settings.steps, help="timed calls after one warm-up call")
    parser.add_argument("--batch", type=int, default=Settings.batch, help="SFT sequences per step")
    parser.add_argument("--image-tokens", type=int, default=Settings.image_tokens, help="per image (a square)")
    parser.add_argument("--rollout-prompts", type=int, default=Settings.rollout_prompts)
    parser.add_argument("--prompts", type=int, default=Settings.prompts, help="GRPO prompts per step")
    parser.add_argument("--k", type=int, default=Settings.k, help="answers per prompt (GRPO's G)")
    parser.add_argument("--max-new-tokens", type=int, default=Settings.max_new_tokens)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke run with the tiny presets")
    parser.add_argument("--budget-s", type=float, default=Settings.budget_s, help="start nothing after this")
    parser.add_argument("--out", default="runs/gpu_check/gpu_check.json", help="JSON file (rewritten after each row)")
    parser.add_argument("--workdir", default=None, help="where random checkpoints go (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="no CUDA: meta-device configs, batches, the plan")
    args = parser.parse_args(argv)
    args.models = [resolve(m) for m in args.models.split(",") if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := sorted(set(args.modes) - set(MODES)):
        parser.error(f"unknown modes {unknown}; modes: {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    s = Settings(
        steps=args.steps,
        batch=args.batch,
        image_tokens=args.image_tokens,
        rollout_prompts=args.rollout_prompts,
        prompts=args.prompts,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        device=args.device,
        budget_s=args.budget_s,
    )
    import torch

    if not args.dry_run and s.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_check.py: skipped, CUDA is not available (--dry-run checks everything that needs no GPU)")
        return []
    if args.dry_run:
        return dry_run(args.models, args.modes, s)
    start = time.perf_counter()
    card = torch.cuda.get_device_name() if s.device == "cuda" else "CPU (smoke run, not a measurement)"
    header = {
        "device": card,
        "date": datetime.date.today().isoformat(),
        "versions": versions("torch", "transformers", "peft", "lightning", "bitsandbytes"),
        "settings": asdict(s),
    }
    print(f"{card}; {header['versions']}; {s}", flush=True)
    rows: list[dict[str, Any]] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict[str, Any]) -> None:
        row = {k: None if v != v else v for k, v in row.items()}  # NaN (no CUDA statistics) -> null
        rows.append(row)
        print(f"[{row['model']} {row['mode']}] " + json.dumps({k: v for k, v in row.items() if k != "options"}))
        out.write_text(json.dumps({**header, "wall_s": time.perf_counter() - start, "rows": rows}, indent=1))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        for key in args.models:
            try:
                run_model(key, args.modes, s, workdir, start + s.budget_s, emit)
            except Exception as err:  # e.g. building or saving the checkpoint: the next model may still run
                emit({"model": key, "name": ARCHS[key].name, "mode": "-", "status": f"failed: {failure(err)}"})
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{card}, {header['date']}; wall time {time.perf_counter() - start:.0f} s; JSON: {out}\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    quiet_libraries()  # here, not in main(): tests call main() and must keep their logging
    main()
