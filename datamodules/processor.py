"""Image-only processors for the supported model families, their chat templates, and processor loading.

Why: transformers' `AutoProcessor` for Qwen2.5-VL / Qwen3-VL insists on a video processor, which needs torchvision; our
CPU stack has none (torchvision does not import beside torch 2.13+cpu). These subclasses declare only the image
processor and the tokenizer, keep every image/text path of the parent working, and are registered for the Auto API so
that `AutoProcessor.from_pretrained(dir)` on a folder we saved returns them (unregistered, it silently returns a bare
tokenizer). Supported families (`SUPPORTED_FAMILIES`, by `model_type` in config.json): Qwen2-VL and Qwen2.5-VL
(14-pixel patches, 28-pixel merged tokens) and Qwen3-VL (16-pixel patches, 32-pixel merged tokens).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

# The chat template shipped with Qwen2.5-VL-*-Instruct (default system prompt when none is given).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The chat template of Qwen3-VL-*-Instruct without tools (our data has none): unlike Qwen2.5-VL it adds no default
# system prompt. Used only when a checkpoint folder ships no template (our tiny test checkpoints).
QWEN3_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}<|im_start|>system\n{% if messages[0]['content'] is string %}"
    "{{ messages[0]['content'] }}{% else %}{% for content in messages[0]['content'] %}{% if 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endif %}"
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if message['role'] == 'user' or message['role'] == 'assistant' %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if message['role'] == 'user' and (content['type'] == 'image' or 'image' in content or 'image_url' in content) %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif message['role'] == 'user' and (content['type'] == 'video' or 'video' in content) %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
# Tokens a sampler must never emit: a later forward over such a sequence would expect image features.
VISION_SPECIAL_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def _init_image_only(processor, image_processor, tokenizer, chat_template) -> None:
    """Set the special-token attributes the parents' `__init__` would set, then the image-only mixin init."""
    token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
    video = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
    processor.image_token, processor.video_token = token, video
    processor.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(token)
    processor.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(video)
    processor.vision_start_token, processor.vision_end_token = "<|vision_start|>", "<|vision_end|>"
    processor.vision_start_token_id = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    processor.vision_end_token_id = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    ProcessorMixin.__init__(processor, image_processor, tokenizer, chat_template=chat_template)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL (and Qwen2-VL) processor without a video processor (works without torchvision)."""

    attributes = ["image_processor", "tokenizer"]  # read by transformers 4.x

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # signature read by v5
        _init_image_only(self, image_processor, tokenizer, chat_template)


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor without a video processor (works without torchvision)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        _init_image_only(self, image_processor, tokenizer, chat_template)


AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageOnlyProcessor, exist_ok=True)
AutoProcessor.register(Qwen3VLConfig, Qwen3VLImageOnlyProcessor, exist_ok=True)

# model_type in config.json -> (image-only processor class, chat template used when the folder ships none).
FAMILIES = {
    "qwen2_vl": (Qwen2_5_VLImageOnlyProcessor, QWEN2_5_VL_CHAT_TEMPLATE),
    "qwen2_5_vl": (Qwen2_5_VLImageOnlyProcessor, QWEN2_5_VL_CHAT_TEMPLATE),
    "qwen3_vl": (Qwen3VLImageOnlyProcessor, QWEN3_VL_CHAT_TEMPLATE),
}
SUPPORTED_FAMILIES = tuple(FAMILIES)


def model_family(path: str | Path) -> str:
    """The `model_type` of a checkpoint (folder or cached hub id), checked to be one we support, with an error that
    names the supported families otherwise (an unsupported model would fail later with a shape error, or worse, train
    with wrong image positions)."""
    folder = Path(str(path)).expanduser()
    if folder.is_dir():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(path)).model_type
    if model_type not in FAMILIES:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not supported; supported families: "
            f"{', '.join(SUPPORTED_FAMILIES)} (Qwen2-VL, Qwen2.5-VL, Qwen3-VL dense checkpoints)"
        )
    return model_type


def image_factor(processor) -> int:
    """Pixels per side of one merged image token: patch size x spatial merge (Qwen2.5-VL 28, Qwen3-VL 32); images are
    resized to multiples of it."""
    image_processor = processor.image_processor
    return int(image_processor.patch_size) * int(image_processor.merge_size)


PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def check_checkpoint(path: str | Path) -> str:
    """The checkpoint `path` as a string, after failing fast and clearly on the usual mistakes: a local folder that
    does not exist (transformers would report a malformed hub repo id), or a hub id while the hub is unreachable and
    the id is not in the local cache (transformers would retry for about a minute)."""
    text = str(path)
    folder = Path(text).expanduser()
    if folder.exists():
        if folder.is_dir() and not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder}: no config.json; expected a Hugging Face checkpoint folder")
        return str(folder)
    looks_local = text.startswith(("/", ".", "~")) or text.count("/") != 1 or "\\" in text
    if looks_local:
        raise FileNotFoundError(
            f"model folder {text} does not exist. If it is a previous stage's output (e.g. the cold start's "
            "exported model), run that stage first; otherwise fix model_path."
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(text, "config.json"), str):
        return text  # cached: transformers loads it without the network
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if reason is None:
        import socket

        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError:
            reason = "huggingface.co is unreachable"
    if reason:
        raise FileNotFoundError(
            f"{text!r} is neither a local folder nor in the Hugging Face cache, and {reason}: check the spelling, "
            "or download it on a connected machine (`hf download ...`) and point model_path at the folder."
        )
    return text


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """Load the image-only processor of a checkpoint folder, with a clear error when its files are missing.

    `min_pixels` / `max_pixels` override the resize bounds saved with the checkpoint (None keeps them). Our data
    pipeline resizes first with the same bounds (`pixel_bounds`), so the processor's own resize is a no-op, as with
    qwen-vl-utils.
    """
    path = check_checkpoint(path)
    folder = Path(path)
    if folder.is_dir():
        names = {p.name for p in folder.iterdir()}
        if not names.intersection(PROCESSOR_FILES):
            raise FileNotFoundError(
                f"{folder}: no tokenizer files ({', '.join(PROCESSOR_FILES)}). Point model_path at a full checkpoint "
                "folder (with tokenizer and preprocessor_config.json), or save the processor there with "
                "processor.save_pretrained()."
            )
        if not names.intersection(IMAGE_PROCESSOR_FILES):
            raise FileNotFoundError(
                f"{folder}: no image processor config (preprocessor_config.json). Copy it from the base model folder."
            )
    processor_class, default_template = FAMILIES[model_family(path)]
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    image_processor = AutoImageProcessor.from_pretrained(str(path))
    template = tokenizer.chat_template or default_template
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    return with_pixel_bounds(processor, min_pixels, max_pixels)


def with_pixel_bounds(processor, min_pixels: int | None = None, max_pixels: int | None = None):
    """The processor itself when the bounds are unchanged (None = keep), else a copy with new resize bounds."""
    low, high = pixel_bounds(processor)
    low = low if min_pixels is None else int(min_pixels)
    high = high if max_pixels is None else int(max_pixels)
    if (low, high) == pixel_bounds(processor):
        return processor
    if low > high:
        raise ValueError(f"min_pixels {low} is larger than max_pixels {high}")
    image_processor = copy.copy(processor.image_processor)
    image_processor.size = {**dict(image_processor.size or {}), "shortest_edge": low, "longest_edge": high}
    image_processor.min_pixels, image_processor.max_pixels = low, high
    return type(processor)(
        image_processor=image_processor, tokenizer=processor.tokenizer, chat_template=processor.chat_template
    )


def pixel_bounds(processor) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor resizes images to: the bounds saved with its checkpoint, unless
    overridden when loading. Data, evaluation and sampling read them from here, so configs need not repeat them."""
    image_processor = processor.image_processor
    size = dict(image_processor.size or {})
    low = size.get("shortest_edge", getattr(image_processor, "min_pixels", None))
    high = size.get("longest_edge", getattr(image_processor, "max_pixels", None))
    if low is None or high is None:
        raise ValueError(
            f"{type(image_processor).__name__} has no pixel bounds (size: {size}); set data.min_pixels / max_pixels"
        )
    return int(low), int(high)
