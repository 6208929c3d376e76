"""Shared fixtures: tiny random Qwen2.5-VL / Qwen3-VL checkpoints (built once per session) and tiny official-format data.

Utilities live in `tests/helpers.py`; data writers and model builders in `assets/` (shared with the benchmarks).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from assets.test_data import write_color_data
from tests.helpers import cpu_trainer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*gemm_4bit_forward.*")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Tiny random Qwen2.5-VL with a small BPE tokenizer (fast tests)."""
    from assets.tiny import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_bpe") / "model", tokenizer="bpe"))


@pytest.fixture(scope="session")
def tiny_qwen_model(tmp_path_factory) -> str:
    """Tiny random Qwen2.5-VL with the real Qwen2.5 tokenizer (151,665 tokens)."""
    from assets.tiny import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen") / "model", tokenizer="qwen", hidden=32))


@pytest.fixture(scope="session")
def tiny_qwen3_model(tmp_path_factory) -> str:
    """Tiny random Qwen3-VL (DeepStack, interleaved M-RoPE, 32-pixel tokens) with the BPE tokenizer; init std 0.5 so
    its greedy answers vary with the input."""
    from assets.tiny import build_tiny_vlm

    folder = tmp_path_factory.mktemp("tiny_qwen3") / "model"
    return str(build_tiny_vlm(folder, tokenizer="bpe", family="qwen3_vl", init_std=0.5))


@pytest.fixture()
def color_data(tmp_path) -> Path:
    return write_color_data(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_tiny_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model after a short full fine-tune on colour questions: it emits <|im_end|> and is sometimes right."""
    import torch

    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.sft import SFTModule
    from lightning_modules.training import OptimConfig
    from lightning_modules.vlm import VLMOptions

    root = tmp_path_factory.mktemp("trained")
    data = write_color_data(root / "data", n=16)
    out = root / "model"
    torch.manual_seed(0)
    module = SFTModule(
        tiny_model,
        vlm=VLMOptions(dtype="float32", lora=None),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        export_dir=str(out),
    )
    trainer = cpu_trainer(max_steps=30, default_root_dir=root)
    trainer.fit(module, VLMDataModule(tiny_model, train_file=str(data), batch_size=4))
    return str(out)
