"""Peak GPU memory and tokens/s of one SFT step on Qwen2.5-VL-3B and -7B, QLoRA and bf16 LoRA: the `lora` and
`qlora` modes of `bench/gpu_check.py`, which now measures these together with rollouts and a GRPO step (and Qwen3-VL).

Kept as a command of its own because the README's earlier instructions name it; every option of bench/gpu_check.py
applies and overrides these defaults.

    python -m bench.gpu_memory                      # = python -m bench.gpu_check --models 3b,7b --modes qlora,lora
    python -m bench.gpu_memory --models 3b --steps 5
    python -m bench.gpu_memory --dry-run            # no CUDA: configs on the meta device, parameter counts, batches
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/<name>.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import quiet_libraries  # noqa: E402
from bench.gpu_check import main as gpu_check  # noqa: E402

DEFAULTS = ["--models", "3b,7b", "--modes", "qlora,lora", "--out", "runs/gpu_check/gpu_memory.json"]

if __name__ == "__main__":
    quiet_libraries()
    gpu_check(DEFAULTS + sys.argv[1:])  # argparse keeps the last value of a repeated option: the user's
