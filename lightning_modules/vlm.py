"""The one model builder: checkpoint folder -> (model, processor) with dtype, attention, freezing, LoRA or QLoRA.

Only this file knows about peft and bitsandbytes; LightningModules receive the built model. Any Qwen2-VL, Qwen2.5-VL or
Qwen3-VL checkpoint folder (or hub id where a hub is reachable) loads through `AutoModelForImageTextToText`; another
model family is refused with the list of supported ones (`datamodules.processor.SUPPORTED_FAMILIES`).

    python -c "from lightning_modules.vlm import VLMOptions, build_vlm; build_vlm('ckpt_dir', VLMOptions())"
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from datamodules.errors import checked
from datamodules.processor import check_checkpoint, load_processor, model_family

# LoRA targets. "language": every linear of the language model (not lm_head, not the vision tower).
LANGUAGE_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# "all": also the vision blocks and the mergers (ms-swift all-linear with an unfrozen ViT, as the official scripts).
# Qwen2.5-VL: mlp.{gate,up,down}_proj and merger.mlp.N; Qwen2-VL: mlp.fc1/fc2; Qwen3-VL: mlp.linear_fc1/2, the merger's
# linear_fc1/2 and the DeepStack mergers (deepstack_merger_list.N), which feed vision features into early LM layers.
VISION_LINEARS = (
    r".*visual\.(blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.(\w+_proj|fc\d|linear_fc\d))|merger\.(mlp\.\d+|linear_fc\d)"
    r"|deepstack_merger_list\.\d+\.linear_fc\d)"
)
# Names under `visual.` that belong to the vision-language merger(s) rather than the ViT (freeze_merger).
MERGER_PREFIXES = ("merger.", "deepstack_merger_list.")
TARGET_PRESETS = {"language": LANGUAGE_LINEARS, "all": f"({LANGUAGE_LINEARS})|({VISION_LINEARS})"}
# transformers 5.x matches skip entries as prefixes/anchored regexes, not substrings: "visual" alone would quantize
# the vision tower silently (prefix matching in transformers 5's bitsandbytes quantizer).
QLORA_SKIP_MODULES = ["model.visual", "lm_head"]
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class LoraOptions:
    """LoRA settings (official DC-SFT: r 32, alpha 64, dropout 0.05)."""

    r: int = 32
    """Adapter rank."""
    alpha: int = 64
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target: str = "language"
    """`language` (every language-model linear), `all` (also the vision tower and merger, as ms-swift's
    `all-linear` with an unfrozen ViT) or a regex over module names."""
    modules_to_save: list[str] | None = None
    """Modules trained fully beside LoRA and saved in the adapter (e.g. `[visual]`)."""


@dataclass
class QuantOptions:
    """QLoRA 4-bit settings (bitsandbytes); the vision tower and lm_head stay unquantized."""

    quant_type: str = "nf4"
    """`nf4` (QLoRA's NormalFloat) or `fp4`."""
    double_quant: bool = True
    """Quantise the quantisation constants too (about 0.4 bit per weight saved)."""
    compute_dtype: str = "bfloat16"
    """Dtype of the de-quantised matmuls."""


@dataclass
class VLMOptions:
    """Everything the builder needs besides the checkpoint path."""

    dtype: str = "bfloat16"
    """Weights dtype: `bfloat16`, `float16` or `float32` (CPU)."""
    attn_implementation: str | None = "sdpa"
    """`sdpa`, `flash_attention_2`, `eager`; None = transformers' default."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (the official scripts: on)."""
    freeze_vision: bool = False
    """Freeze the vision tower (the official scripts train it)."""
    freeze_merger: bool = False
    """Freeze the vision-language merger (the official scripts train it)."""
    freeze_language: bool = False
    """Freeze the language model (with `lora: null`: train only the vision side, as LLaVA's alignment stage)."""
    lora: LoraOptions | None = field(default_factory=LoraOptions)
    """LoRA adapter settings; null = full fine-tuning (or frozen evaluation with `adapter_path`)."""
    qlora: QuantOptions | None = None
    """4-bit base weights under the LoRA adapter (QLoRA); needs `lora`."""
    adapter_path: str | None = None
    """An existing PEFT adapter to load: trainable when `lora` is set, frozen otherwise."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint folder (not needed for Qwen2.5-VL)."""


def vlm_problems(opts: VLMOptions) -> list[str]:
    """Invalid builder options, all at once (modules check them at construction, before anything loads)."""
    problems = []
    if opts.dtype not in DTYPES:
        problems.append(f"vlm.dtype {opts.dtype!r} is not one of {sorted(DTYPES)}")
    if opts.lora is not None and opts.lora.target not in TARGET_PRESETS:
        try:
            re.compile(opts.lora.target)
        except re.error as err:
            problems.append(
                f"vlm.lora.target {opts.lora.target!r} is neither a preset {sorted(TARGET_PRESETS)} nor a valid "
                f"regex ({err})"
            )
    if opts.lora is not None and (opts.lora.r < 1 or opts.lora.alpha <= 0 or not 0 <= opts.lora.dropout < 1):
        problems.append(f"vlm.lora needs r >= 1, alpha > 0 and 0 <= dropout < 1, got {opts.lora}")
    if opts.qlora is not None and opts.lora is None:
        problems.append("vlm.qlora needs vlm.lora (4-bit base weights cannot be trained directly)")
    if opts.qlora is not None:
        if opts.qlora.quant_type not in ("nf4", "fp4"):
            problems.append(f"vlm.qlora.quant_type {opts.qlora.quant_type!r} must be nf4 or fp4")
        if opts.qlora.compute_dtype not in DTYPES:
            problems.append(f"vlm.qlora.compute_dtype {opts.qlora.compute_dtype!r} is not one of {sorted(DTYPES)}")
    return problems


def check_options(opts: VLMOptions) -> None:
    """Refuse invalid combinations all at once, before loading anything."""
    checked(vlm_problems(opts), "model")


def _bitsandbytes_config(q: QuantOptions):
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("QLoRA requested but bitsandbytes is not installed: pip install -e '.[qlora]'")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # a broken native library
        raise RuntimeError(f"QLoRA requested but bitsandbytes cannot run here: {err}") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype],
        llm_int8_skip_modules=QLORA_SKIP_MODULES,
    )


def lora_targets(model: nn.Module, target: str) -> str:
    """The regex for `target`, checked to match at least one linear layer (a clear error otherwise)."""
    pattern = TARGET_PRESETS.get(target, target)
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or "Linear" in type(m).__name__]
    if not any(re.fullmatch(pattern, n) for n in linear_names):
        raise ValueError(
            f"LoRA target {target!r} matches no linear layer of the model; examples of names: "
            f"{linear_names[:3]}. Use 'language', 'all' or a regex over these names."
        )
    return pattern


def _freeze(model: nn.Module, opts: VLMOptions) -> None:
    inner = model.model if hasattr(model, "model") else model
    if opts.freeze_language:  # the language model and lm_head (tied to the embeddings)
        for name, param in model.named_parameters():
            if ".visual." not in f".{name}":
                param.requires_grad_(False)
    visual = getattr(inner, "visual", None)
    if visual is None:
        return
    for name, param in visual.named_parameters():
        is_merger = name.startswith(MERGER_PREFIXES)
        if (opts.freeze_merger and is_merger) or (opts.freeze_vision and not is_merger):
            param.requires_grad_(False)


def _checkpoint(model: nn.Module, hooks_only: bool = False) -> None:
    """Non-reentrant gradient checkpointing, without the input-embedding hooks transformers and peft add with it.

    The hooks (`enable_input_require_grads`) make embedding outputs require grad, a fix for reentrant checkpointing
    only (peft skips it for non-reentrant in `prepare_model_for_kbit_training`). transformers 5 hooks every embedding
    it finds, the vision tower's patch embedding included, so a frozen tower would build a graph and run its backward
    pass for nothing (time and activation memory); adapters and trainable layers get their gradients without them.
    """
    if not hooks_only:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():  # transformers keeps only the last call's hook handles: remove them all by name
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "make_inputs_require_grads":
                del module._forward_hooks[key]
    if hasattr(model, "_require_grads_hooks"):
        model._require_grads_hooks = []


def build_vlm(
    model_path: str,
    opts: VLMOptions | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    device_map=None,
):
    """Load a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint and its image-only processor, then apply freezing / LoRA /
    QLoRA.

    Returns (model, processor); the model is in train mode with only the intended parameters trainable.
    """
    from transformers import AutoModelForImageTextToText

    opts = opts or VLMOptions()
    check_options(opts)
    model_path = check_checkpoint(model_path)
    model_family(model_path)  # refuse an unsupported family before loading weights
    if opts.adapter_path and not (Path(opts.adapter_path) / "adapter_config.json").exists():
        raise FileNotFoundError(f"adapter_path {opts.adapter_path}: no adapter_config.json (a PEFT adapter folder)")
    processor = load_processor(model_path, min_pixels, max_pixels)
    kwargs = {"dtype": DTYPES[opts.dtype], "trust_remote_code": opts.trust_remote_code}
    if opts.attn_implementation:
        kwargs["attn_implementation"] = opts.attn_implementation
    if opts.qlora is not None:
        kwargs["quantization_config"] = _bitsandbytes_config(opts.qlora)
        kwargs["device_map"] = device_map or ({"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu")
    model = AutoModelForImageTextToText.from_pretrained(model_path, **kwargs)
    if opts.lora is None and opts.adapter_path:  # evaluate a saved adapter (weights frozen)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, opts.adapter_path)
        model.requires_grad_(False)
        return model, processor
    if opts.lora is None:
        _freeze(model, opts)
        if opts.gradient_checkpointing:
            _checkpoint(model)
        model.train()
        return model, processor

    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if opts.qlora is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=opts.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if opts.gradient_checkpointing:
            _checkpoint(model, hooks_only=True)
    elif opts.gradient_checkpointing:
        _checkpoint(model)
    if opts.adapter_path:
        model = PeftModel.from_pretrained(model, opts.adapter_path, is_trainable=True)
    else:
        config = LoraConfig(
            r=opts.lora.r,
            lora_alpha=opts.lora.alpha,
            lora_dropout=opts.lora.dropout,
            target_modules=lora_targets(model, opts.lora.target),
            bias="none",
            modules_to_save=opts.lora.modules_to_save,
        )
        model = get_peft_model(model, config)
    if opts.gradient_checkpointing:
        _checkpoint(unwrap(model), hooks_only=True)  # peft hooks the embeddings again
    model.train()
    return model, processor


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model under a PEFT wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merge_adapter(base_path: str, adapter_path: str, out_dir: str, dtype: str = "bfloat16") -> Path:
    """Merge a PEFT adapter into its base model and save model + processor (for export or the next stage)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=DTYPES[dtype])
    merged = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    merged.save_pretrained(out_dir)
    load_processor(base_path).save_pretrained(out_dir)
    return Path(out_dir)


if __name__ == "__main__":  # python -m lightning_modules.vlm BASE ADAPTER OUT [dtype]
    import sys

    if len(sys.argv) < 4:
        sys.exit("usage: python -m lightning_modules.vlm BASE_DIR ADAPTER_DIR OUT_DIR [bfloat16|float32]")
    print(merge_adapter(*sys.argv[1:5]))
