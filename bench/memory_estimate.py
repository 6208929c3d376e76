"""Predicted peak GPU memory per configuration, from the model config alone: weights, adapter and optimizer state,
activations (with and without gradient checkpointing), logits and the rollouts' KV cache.

    python -m bench.memory_estimate --model 7b                         # the GPU check's four rows, one preset
    python -m bench.memory_estimate --model 3b,7b,32b,72b --scaling    # per-GPU needs of real runs, 1 to 8 GPUs
    python -m bench.memory_estimate --run paper/qwen2_5_vl_7b/grpo_qlora
    python -m bench.memory_estimate --config configs/base.yaml --config ...   # fragments in order, as train.py
    python -m bench.memory_estimate --measured runs/gpu_check/gpu_check.json  # predicted beside measured

Why a model and not a lookup table: a new size, rank, batch or image budget is one call. `estimate` is a pure function
of a few architecture numbers (`arch_numbers`, read off the model built on the meta device) and the run's options.
Figures are bytes per GPU as `torch.cuda.max_memory_allocated` counts them (the CUDA context, about 0.5 GiB, and the
allocator's cached blocks come on top). Rules, per component:

- weights: parameters x 2 bytes (bf16). QLoRA: the language model's linear weights in nf4 with double quantization,
  4.127 bits each (4-bit codes, an 8-bit absmax per 64 weights, an fp32 constant per 256 blocks; Dettmers et al. 2023,
  "QLoRA", section 3); every other weight (vision tower, embeddings, lm_head, norms) is upcast to fp32 by peft's
  `prepare_model_for_kbit_training`, unless the module is later cast to bf16 (Lightning's `bf16-true` precision
  converts the whole module in `Strategy.setup`: `cast_bf16`).
- adapter: LoRA parameters r x (in + out) per targeted linear, fp32 (peft upcasts adapters) unless cast to bf16; with
  gradients and AdamW's two moments: 4 copies. Full fine-tuning: gradients + two moments in the weights' dtype
  (DeepSpeed keeps an fp32 master copy and fp32 moments: 12 bytes per parameter). FSDP / ZeRO-3 divide weights,
  gradients and moments by the GPU count, ZeRO-2 only gradients and moments.
- activations: a per-layer, per-token count of the tensors autograd keeps, after Korthikanti et al. 2022 ("Reducing
  Activation Recomputation in Large Transformer Models", section 4: 34 s b h + 5 a s^2 b bytes per GPT layer; with
  memory-efficient attention the s^2 term is not stored). For our LLaMA-style layers with frozen base weights:
  4h + 2kv + 3I elements (the two RMSNorm inputs, q / k / v after RoPE, the attention output, the SwiGLU gate, its SiLU
  and the up projection), plus each LoRA adapter's dropped-out input (6h + I, and 1-byte dropout masks), plus the
  linear inputs (2h + I) when the base weights train. Gradient checkpointing (one checkpoint per decoder layer, as
  `gradient_checkpointing_enable`) keeps one h-vector per layer and token and rebuilds one layer at a time: T (L h + one
  layer). The vision tower follows the same rule per patch (merge^2 patches per image token) when it has a graph,
  i.e. when it trains (a frozen tower has none: `build_vlm` removes the input-embedding hooks transformers and peft
  add with checkpointing, which would otherwise reach Qwen2.5-VL's patch embedding).
  Elements are 2 bytes, 4 under QLoRA without the bf16 cast (the fp32 upcast makes the residual stream fp32).
- logits: fp32 vocabulary rows. SFT: the supervised positions only (x2 for the loss's gradient). GRPO: every
  completion token's row is kept by logsumexp's backward (`rollout.sequence_logprobs` computes them in chunks of 256,
  but autograd keeps each chunk), plus one chunk's temporaries. Sampling: N rows x 3 per decode step.
- KV cache: 2 x layers x kv_heads x head_dim x bytes x rows x (prompt + new tokens), rows = prompts x k (the prefill
  is shared, the cache expanded item-major). Transient: one layer's MLP tensors for the prompt batch, or one ViT
  block's for its patches, whichever is larger; under FSDP / ZeRO-3 also two gathered decoder layers (the one running
  and the one prefetched).
Peak: SFT = weights + adapter + activations + logits + transient; sampling = weights + adapter + KV + transient;
GRPO = weights + adapter + max(rollout phase, training phase).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/<name>.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2**30
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # per weight, double quantization or not
LOGIT_CHUNK = 256  # lightning_modules/rollout.py sequence_logprobs' default chunk
SHARD_ALL = ("fsdp", "deepspeed_stage_3", "deepspeed_stage_3_offload")
SHARD_STATES = ("deepspeed_stage_2", "deepspeed_stage_2_offload")


@dataclass
class Options:
    """One run's memory-relevant settings, per GPU and per micro-batch."""

    mode: str = "sft"  # sft | grpo | rollout (difficulty estimation, evaluation)
    lora_r: int | None = 32  # None: full fine-tuning (sft / grpo) or the bare model (rollout)
    lora_target: str = "language"  # language | all (also the vision tower and merger)
    lora_dropout: float = 0.05
    qlora: bool = False
    double_quant: bool = True
    gradient_checkpointing: bool = True
    cast_bf16: bool = False  # Lightning precision bf16-true casts the whole module (fp32 upcasts included)
    weight_bytes: int = 2  # vlm.dtype: bfloat16 2, float32 4
    freeze_vision: bool = False  # full fine-tuning only
    batch: int = 1  # SFT sequences, or prompts for grpo / rollout
    seq_len: int = 1066  # tokens per SFT sequence, or per prompt
    image_tokens: int = 1024  # per sequence / prompt (one image)
    supervised: int = 4  # supervised tokens per SFT sequence (answer + <|im_end|>)
    k: int = 8  # answers per prompt (GRPO's G)
    max_new_tokens: int = 128
    strategy: str = "ddp"  # ddp | fsdp | deepspeed_stage_2 | deepspeed_stage_3
    devices: int = 1
    reference_copy: bool = False  # GRPO without LoRA and beta > 0 keeps a frozen copy of the model


def layer_bytes(dims: tuple[float, float, float, int, int], dropout: float, lora: bool, full: bool, b: int) -> float:
    """Bytes autograd keeps per token (or patch) in one layer; `dims` = (hidden, k+v width per head group, MLP width,
    MLP tensors kept: 3 for SwiGLU, 2 for a GELU MLP, h-sized adapter inputs: 6 in the LM, 4 / 3 in a ViT block)."""
    h, kv, inter, mlp_tensors, lora_inputs = dims
    elements = 4 * h + 2 * kv + mlp_tensors * inter
    masks = 0.0
    if lora and dropout > 0:
        elements += lora_inputs * h + inter  # one dropped-out input per adapted linear
        masks = lora_inputs * h + inter  # bool dropout masks, 1 byte each
    elif lora or full:
        elements += 2 * h + inter  # the linears' inputs, shared by q/k/v and by gate/up
    return elements * b + masks


def estimate(arch: Mapping[str, Any], o: Options) -> dict[str, float]:
    """Predicted bytes per GPU: each component and the peak. `arch`: the numbers `arch_numbers` returns."""
    a, training = arch, o.mode in ("sft", "grpo")
    upcast = 2 if o.cast_bf16 else 4  # peft's fp32: adapters, and the non-4-bit weights under QLoRA
    b = 4 if (o.qlora and not o.cast_bf16) or o.weight_bytes == 4 else 2
    deepspeed, n = o.strategy.startswith("deepspeed"), max(1, o.devices)
    shard_all, shard_states = o.strategy in SHARD_ALL, o.strategy in SHARD_ALL + SHARD_STATES
    total, quantized = a["params_total"], a["params_quantized"]
    if o.qlora:
        weights = quantized * NF4_BYTES[o.double_quant] + (total - quantized) * upcast
    else:
        weights = total * o.weight_bytes * (2 if o.reference_copy else 1)
    lora = o.lora_r is not None
    vision_lora = lora and o.lora_target == "all"
    if lora:
        per_rank = a["lora_per_rank_language"] + (a["lora_per_rank_vision"] if vision_lora else 0)
        adapter_bytes = 2 if o.cast_bf16 else 4
        adapter = o.lora_r * per_rank * adapter_bytes
        grads = adapter if training else 0.0
        states = o.lora_r * per_rank * (12 if deepspeed else 2 * adapter_bytes) if training else 0.0
    else:
        trainable = total - (a["params_vision"] if o.freeze_vision else 0) if training else 0
        adapter, grads = 0.0, trainable * o.weight_bytes
        states = trainable * (12 if deepspeed else 2 * o.weight_bytes)
    if shard_all:
        weights, adapter = weights / n, adapter / n
    if shard_states:
        grads, states = grads / n, states / n

    h, layers, vocab = a["hidden"], a["layers"], a["vocab"]
    lm_dims = (h, a["kv_dim"], a["intermediate"], 3, 6)
    hv = a["vision_hidden"]  # the ViT's attention is full multi-head: k and v are as wide as h
    vit_dims = (hv, hv, a["vision_intermediate"], a["vision_mlp_tensors"], a["vision_lora_inputs"])
    patches_per_image = a["image_patches_per_token"] * o.image_tokens
    rows = o.batch * o.k
    if o.mode == "sft":
        tokens, images = o.batch * o.seq_len, o.batch
    else:
        tokens, images = rows * (o.seq_len + o.max_new_tokens), o.batch
    activations = logits = 0.0
    if training:
        full = not lora
        per_layer = layer_bytes(lm_dims, o.lora_dropout, lora, full, b)
        kept = layers * h * b + per_layer if o.gradient_checkpointing else layers * per_layer
        activations = tokens * (kept + 2 * h * b)  # + embedding output and final norm output
        vision_trains = vision_lora or (full and not o.freeze_vision)
        if vision_trains:
            depth = a["vision_layers"]
            per_block = layer_bytes(vit_dims, o.lora_dropout, vision_lora, full and not o.freeze_vision, b)
            kept = depth * hv * b + per_block if o.gradient_checkpointing else depth * per_block
            activations += images * patches_per_image * kept
        if o.mode == "sft":
            logits = o.batch * o.supervised * vocab * 4 * 2
        else:
            logits = (rows * o.max_new_tokens + 2 * LOGIT_CHUNK) * vocab * 4
    kv_cache = 0.0
    # FSDP / ZeRO-3: one decoder layer gathered in full, plus the next one prefetched
    layer_params = (total - a["params_vision"] - vocab * h - a["params_lm_head"]) / layers
    gather = 2 * layer_params * o.weight_bytes if shard_all else 0.0
    sampling = 0.0
    if o.mode in ("grpo", "rollout"):
        kv_cache = 2 * layers * a["kv_dim"] * b * rows * (o.seq_len + o.max_new_tokens)
        prefill = o.batch * o.seq_len * (4 * h + 3 * a["intermediate"]) * b
        vit = images * patches_per_image * (4 * hv + 3 * a["vision_intermediate"]) * b
        sampling = max(prefill, vit, rows * vocab * 4 * 3)
    base = weights + adapter + grads + states + gather
    if o.mode == "sft":
        peak = base + activations + logits
    elif o.mode == "rollout":
        peak = weights + adapter + gather + kv_cache + sampling
    else:
        peak = base + max(kv_cache + sampling, activations + logits)
    return {
        "weights": weights,
        "adapter": adapter,
        "grads": grads,
        "optimizer": states,
        "activations": activations,
        "logits": logits,
        "kv_cache": kv_cache,
        "transient": gather + sampling,
        "peak": peak,
    }


# ------------------------------------------------------------------------------------------- architecture numbers
def arch_numbers(model) -> dict[str, Any]:
    """The numbers `estimate` needs, read off a model (on the meta device: no memory): sizes, parameters per part,
    the language model's linear weights (what QLoRA quantizes) and LoRA parameters per unit of rank for our target
    presets (`lightning_modules.vlm`'s regexes, so the count matches what `build_vlm` adapts)."""
    from torch import nn

    from bench.architectures import part_counts
    from lightning_modules.vlm import LANGUAGE_LINEARS, VISION_LINEARS

    text, vision = model.config.get_text_config(), model.config.vision_config
    qwen3 = model.config.model_type == "qwen3_vl"
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    parts = part_counts(model)
    per_rank = {"language": 0, "vision": 0}
    quantized = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if ".language_model." in f".{name}.":
            quantized += module.weight.numel()
        for part, pattern in (("language", LANGUAGE_LINEARS), ("vision", VISION_LINEARS)):
            if re.fullmatch(pattern, name):
                per_rank[part] += module.in_features + module.out_features
    return {
        "family": model.config.model_type,
        "layers": text.num_hidden_layers,
        "hidden": text.hidden_size,
        "intermediate": text.intermediate_size,
        "kv_dim": text.num_key_value_heads * head_dim,
        "vocab": text.vocab_size,
        "vision_layers": vision.depth,
        "vision_hidden": vision.hidden_size,
        "vision_intermediate": vision.intermediate_size,
        "vision_mlp_tensors": 2 if qwen3 else 3,  # Qwen3-VL's ViT: fc1 -> GELU -> fc2; Qwen2.5-VL's: SwiGLU
        "vision_lora_inputs": 3 if qwen3 else 4,  # qkv, proj, fc1 / qkv, proj, gate, up
        "image_patches_per_token": vision.spatial_merge_size**2,
        "factor": vision.patch_size * vision.spatial_merge_size,  # pixels per merged image token
        "params_total": parts["total"],
        "params_vision": parts["vision"],
        "params_lm_head": parts["lm_head"],
        "params_quantized": quantized,
        "lora_per_rank_language": per_rank["language"],
        "lora_per_rank_vision": per_rank["vision"],
    }


def preset_numbers(key: str) -> dict[str, Any]:
    from bench.architectures import meta_model

    return arch_numbers(meta_model(key))


def path_numbers(path: str) -> dict[str, Any]:
    """`arch_numbers` of a local checkpoint folder's config.json (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        return arch_numbers(AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path)))


# ------------------------------------------------------------------------------------------------ configurations
# Text tokens around one image in our chat template (bench.gpu_check --dry-run): Qwen2.5-VL adds a default system
# prompt, Qwen3-VL does not. SFT sequence = prompt + answer; prompt = what the sampler is given.
TEXT_TOKENS = {"qwen2_5_vl": {"sft": 42, "prompt": 37}, "qwen3_vl": {"sft": 31, "prompt": 26}}
SCALING = {  # label -> options of a real run (Lightning bf16-true, the paper's LoRA on all linears, 1 image)
    "QLoRA SFT, 1 GPU": Options(qlora=True, lora_target="all", cast_bf16=True),
    "LoRA SFT, DDP": Options(lora_target="all", cast_bf16=True),
    "LoRA SFT, FSDP x 8": Options(lora_target="all", cast_bf16=True, strategy="fsdp", devices=8),
    "full SFT, DDP": Options(lora_r=None, cast_bf16=True),
    "full SFT, ZeRO-3 x 8": Options(lora_r=None, cast_bf16=True, strategy="deepspeed_stage_3", devices=8),
    "GRPO LoRA, DDP": Options(mode="grpo", lora_target="all", cast_bf16=True, batch=2),
    "GRPO QLoRA, 1 GPU": Options(mode="grpo", qlora=True, lora_target="all", cast_bf16=True, batch=2),
    "GRPO LoRA, FSDP x 8": Options(mode="grpo", lora_target="all", cast_bf16=True, batch=2, strategy="fsdp", devices=8),
}


def shaped(o: Options, numbers: Mapping[str, Any], image_tokens: int) -> Options:
    """`o` with the sequence length of one image of `image_tokens` tokens in this family's template."""
    text = TEXT_TOKENS.get(numbers["family"], TEXT_TOKENS["qwen2_5_vl"])
    seq = image_tokens + text["sft" if o.mode == "sft" else "prompt"]
    return replace(o, image_tokens=image_tokens, seq_len=seq)


def check_rows(numbers: Mapping[str, Any]) -> list[tuple[str, Options]]:
    """The GPU check's four modes with its default shapes (bench/gpu_check.py Settings; no bf16 cast)."""
    from bench.gpu_check import Settings

    s = Settings()
    common = {"gradient_checkpointing": s.gradient_checkpointing, "k": s.k, "max_new_tokens": s.max_new_tokens}
    rows = {
        "lora": Options(batch=s.batch, **common),
        "qlora": Options(qlora=True, batch=s.batch, **common),
        "rollout": Options(mode="rollout", batch=s.rollout_prompts, **common),
        "grpo": Options(mode="grpo", batch=s.prompts, **common),
    }
    return [(mode, shaped(o, numbers, s.image_tokens)) for mode, o in rows.items()]


def measured_rows(path: str) -> list[tuple[str, str, Options, float | None]]:
    """(preset, mode, options, measured peak GiB) for every row of a bench/gpu_check.py JSON file."""
    import json

    data = json.loads(open(path, encoding="utf-8").read())
    s, out = data["settings"], []
    for row in data["rows"]:
        if row.get("status") != "ok" or row.get("mode") not in ("lora", "qlora", "rollout", "grpo"):
            continue  # skipped, failed or OOM: nothing measured to compare with
        vlm, shape, mode = row.get("options") or {}, row["shape"], row["mode"]
        lora = vlm.get("lora") or {}
        batch = {"lora": s["batch"], "qlora": s["batch"], "rollout": s["rollout_prompts"], "grpo": s["prompts"]}[mode]
        new_tokens = s["max_new_tokens"]
        if mode == "grpo" and row.get("tokens"):  # GRPO stops at stop tokens: its mean completion length
            new_tokens = max(1, round(row["tokens"] / (batch * s["k"])))
        o = Options(
            mode={"lora": "sft", "qlora": "sft"}.get(mode, mode),
            lora_r=lora.get("r", 32),
            lora_target=lora.get("target", "language"),
            lora_dropout=lora.get("dropout", 0.05),
            qlora=mode == "qlora",
            gradient_checkpointing=vlm.get("gradient_checkpointing", True),
            batch=batch,
            seq_len=shape["seq_len"] if mode in ("lora", "qlora") else shape["prompt_len"],
            image_tokens=shape["image_tokens"],
            k=s["k"],
            max_new_tokens=new_tokens,
        )
        out.append((row["model"], mode, o, row.get("peak_gib")))
    return out


def subcommand_options() -> list[str]:
    """Options LightningCLI adds per subcommand: the arguments of `Trainer.fit` / `validate` / `test` / `predict`
    besides the model and the data (`ckpt_path`, `weights_only`, ...)."""
    import inspect

    from lightning.pytorch import Trainer

    data = {"self", "model", "datamodule", "train_dataloaders", "val_dataloaders", "dataloaders"}
    names = {
        n for fn in ("fit", "validate", "test", "predict") for n in inspect.signature(getattr(Trainer, fn)).parameters
    }
    return sorted(names - data)


def parse_run(args: list[str]):
    """A run's composed config exactly as train.py parses it (fragments in order, `${run:...}` resolved; or one file
    that `train.py <subcommand> ... --print_config` wrote), without instantiating anything: no model, no data, no
    demo assets."""
    import lightning as L

    from datamodules.vlm_data import VLMDataModule
    from train import DCSFTCLI, DCSFTParser

    class ParseOnly(DCSFTCLI):
        def add_arguments_to_parser(self, parser) -> None:
            super().add_arguments_to_parser(parser)
            for name in subcommand_options():  # in a `--print_config` file, beside the shared options
                parser.add_argument(f"--{name}", default=None)

        def _set_seed(self) -> None:  # parsing must not reseed the caller's RNGs (nor set PL_GLOBAL_SEED)
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    kwargs = {"parser_class": DCSFTParser, "parser_kwargs": {"parser_mode": "omegaconf+"}}
    return ParseOnly(L.LightningModule, VLMDataModule, subclass_mode_model=True, args=args, run=False, **kwargs).config


def config_row(config, devices: int | None) -> tuple[str, dict[str, Any], Options, str]:
    """(preset or folder, architecture numbers, options, notes) of a composed run config."""
    from bench.architectures import preset_for

    init, data, trainer, run = config.model.init_args, config.data, config.trainer, config.get("run")
    kind = config.model.class_path.rsplit(".", 1)[-1]
    modes = {"SFTModule": "sft", "GRPOModule": "grpo", "DifficultyEstimator": "rollout"}
    if kind not in modes:
        raise SystemExit(f"model class {kind}: the estimator knows {', '.join(modes)}")
    path = str(init.model_path)
    if (Path(path) / "config.json").is_file():
        name, numbers = path, path_numbers(path)
    else:
        name = preset_for(path, run and run.base_model, run and run.size)
        if name is None:
            raise SystemExit(f"{path}: not a local checkpoint and no preset matches; use --model (presets: see --help)")
        numbers = preset_numbers(name)
    vlm, sampling, grpo = init.vlm, init.get("sampling"), init.get("grpo")
    factor = numbers["factor"]
    image_tokens = int(data.max_pixels) // factor**2 if data.max_pixels else 1024
    notes = "" if data.max_pixels else "max_pixels unset: 1,024 image tokens assumed; "
    o = Options(
        mode=modes[kind],
        lora_r=vlm.lora.r if vlm.lora else None,
        lora_target=vlm.lora.target if vlm.lora else "language",
        lora_dropout=vlm.lora.dropout if vlm.lora else 0.0,
        qlora=vlm.qlora is not None,
        double_quant=bool(vlm.qlora and vlm.qlora.double_quant),
        gradient_checkpointing=bool(vlm.gradient_checkpointing),
        cast_bf16=str(trainer.precision) in ("bf16-true", "16-true"),
        weight_bytes=4 if vlm.dtype in ("float32", "fp32") else 2,
        freeze_vision=bool(vlm.freeze_vision),
        batch=int(data.eval_batch_size if kind == "DifficultyEstimator" else data.batch_size),
        k=sampling.k if sampling else 8,
        max_new_tokens=sampling.max_new_tokens if sampling else 128,
        strategy=str(trainer.strategy),
        devices=devices or (trainer.devices if isinstance(trainer.devices, int) else 1),
        reference_copy=kind == "GRPOModule" and vlm.lora is None and grpo is not None and grpo.beta > 0,
    )
    o = shaped(o, numbers, image_tokens)
    if data.max_length and o.seq_len > data.max_length:
        o = replace(o, seq_len=int(data.max_length))
    notes += f"precision {trainer.precision}, strategy {o.strategy}, {o.devices} device(s)"
    return name, numbers, o, notes


# ------------------------------------------------------------------------------------------------------- output
def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def describe(o: Options) -> str:
    quant = "QLoRA nf4" if o.qlora else "bf16" if o.weight_bytes == 2 else "fp32"
    train = f"LoRA r{o.lora_r} {o.lora_target}" if o.lora_r else ("full" if o.mode != "rollout" else "no adapter")
    shape = f"{o.batch} x {o.seq_len} tok" if o.mode == "sft" else f"{o.batch} x k {o.k} x {o.max_new_tokens} new"
    extra = (", GC" if o.gradient_checkpointing and o.mode != "rollout" else "") + (
        ", bf16-true" if o.cast_bf16 else ""
    )
    shard = f", {o.strategy} x {o.devices}" if o.strategy in SHARD_ALL + SHARD_STATES else ""
    return f"{o.mode} {quant} {train}, {shape}{extra}{shard}"


def print_rows(rows: list[tuple[str, Options, dict[str, float], float | None]]) -> None:
    """One line per configuration: the components (GiB), the predicted peak, and the measured peak if known."""
    columns = ["weights", "adapter + grads + optimizer", "activations", "logits", "KV + transient"]
    print(f"| model | configuration | {' | '.join(columns)} | predicted peak (GiB) | measured (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, o, e, measured in rows:
        states = e["adapter"] + e["grads"] + e["optimizer"]
        print(
            f"| {name} | {describe(o)} | {gib(e['weights'])} | {gib(states)} | {gib(e['activations'])} | "
            f"{gib(e['logits'])} | {gib(e['kv_cache'] + e['transient'])} | **{gib(e['peak'])}** | "
            f"{'-' if measured is None or measured != measured else f'{measured:.2f}'} |"
        )


def print_scaling(keys: list[str]) -> None:
    """Predicted peak per GPU (GiB) of real runs: one row per model, one column per way of running it."""
    from bench.architectures import ARCHS

    print(f"| model | {' | '.join(SCALING)} |\n|---|{'---|' * len(SCALING)}")
    for key in keys:
        numbers = preset_numbers(key)
        cells = [gib(estimate(numbers, shaped(o, numbers, 1024))["peak"]) for o in SCALING.values()]
        print(f"| {ARCHS[key].name} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Print the table; return its rows (model, options, the components in bytes, measured GiB or None)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="comma-separated presets (3b, 7b, 32b, 72b, qwen3_4b, 8b = qwen3_8b)")
    parser.add_argument("--scaling", action="store_true", help="with --model: per-GPU peaks of real runs")
    parser.add_argument("--config", action="append", default=[], help="a config file; repeat for fragments, in order")
    parser.add_argument("--run", help="a run from configs/runs.yaml (its fragments)")
    parser.add_argument("--devices", type=int, default=None, help="GPUs that share sharded state (FSDP / ZeRO)")
    parser.add_argument("--measured", help="a bench/gpu_check.py JSON: its rows, predicted beside measured")
    args = parser.parse_args(argv)
    from bench.architectures import resolve

    rows: list[tuple[str, Options, dict[str, float], float | None]] = []
    if args.measured:
        cache: dict[str, dict[str, Any]] = {}
        for key, _, o, peak in measured_rows(args.measured):
            numbers = cache.setdefault(key, preset_numbers(key))
            rows.append((key, o, estimate(numbers, o), peak))
    if args.run or args.config:
        from scripts.runs import command

        fragments = command(args.run)[1:] if args.run else []
        fragments += [word for path in args.config for word in ("--config", path)]
        name, numbers, o, notes = config_row(parse_run(fragments), args.devices)
        print(f"{args.run or ' + '.join(args.config)}: {name}; {notes}")
        rows.append((name, o, estimate(numbers, o), None))
    keys = [resolve(k) for k in (args.model or "").split(",") if k.strip()]
    if args.scaling:
        print_scaling(keys or ["3b", "7b", "32b", "72b"])
        return []
    for key in keys:
        numbers = preset_numbers(key)
        rows += [(key, o, estimate(numbers, o), None) for _, o in check_rows(numbers)]
    if not rows and args.measured:
        print(f"{args.measured}: no measured row (every mode skipped or failed)")
        return []
    if not rows:
        parser.error("give --model, --config, --run or --measured")
    print_rows(rows)
    return [{"model": name, "options": o, **e, "measured_gib": m} for name, o, e, m in rows]


if __name__ == "__main__":
    from bench.common import quiet_libraries

    quiet_libraries()  # here, not in main(): tests call main() and must keep their logging
    main()
