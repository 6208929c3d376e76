"""Shared fixtures: tiny random Qwen2.5-VL checkpoints (built once per session) and tiny official-format data."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*gemm_4bit_forward.*")

COLORS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 220, 0)}


def cpu_trainer(**kwargs):
    """A quiet CPU Trainer for tests: no logger, checkpoints, progress bar, summary or sanity check."""
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Tiny random Qwen2.5-VL with a small BPE tokenizer (fast tests)."""
    from lightning_modules.tiny import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_bpe") / "model", tokenizer="bpe"))


@pytest.fixture(scope="session")
def tiny_qwen_model(tmp_path_factory) -> str:
    """Tiny random Qwen2.5-VL with the real Qwen2.5 tokenizer (151,665 tokens)."""
    from lightning_modules.tiny import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen") / "model", tokenizer="qwen", hidden=32))


def write_color_data(
    folder: Path, n: int = 16, fmt: str = "messages", size: int = 56, colors: list[str] | None = None
) -> Path:
    """n one-colour images with the question 'What color is the image?' in an official format; returns the JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    names = colors or sorted(COLORS)
    rows = []
    for i in range(n):
        color = names[i % len(names)]
        Image.new("RGB", (size, size), COLORS[color]).save(folder / "images" / f"{i}.png")
        problem = "What color is the image? Output the answer using one word."
        if fmt == "messages":
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": "<image>" + problem},
                        {"role": "assistant", "content": color},
                    ],
                    "images": [f"images/{i}.png"],
                }
            )
        else:
            rows.append({"problem": problem, "solution": color, "image": f"images/{i}.png"})
    path = folder / f"{fmt}.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture()
def color_data(tmp_path) -> Path:
    return write_color_data(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_tiny_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model after a short full fine-tune on colour questions: it emits <|im_end|> and is sometimes right."""
    import torch

    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.sft import SFTModule
    from lightning_modules.vlm import VLMOptions

    root = tmp_path_factory.mktemp("trained")
    data = write_color_data(root / "data", n=16)
    out = root / "model"
    torch.manual_seed(0)
    module = SFTModule(
        tiny_model, vlm=VLMOptions(dtype="float32", lora=None), lr=1e-2, warmup_ratio=0.0, export_dir=str(out)
    )
    trainer = cpu_trainer(max_steps=30, default_root_dir=root)
    trainer.fit(module, VLMDataModule(tiny_model, train_file=str(data), batch_size=4))
    return str(out)
