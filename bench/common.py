"""Shared helpers for the benchmark scripts: threads, process memory, subprocess runs, versions, formatting.

Peak memory on CPU: `tracemalloc` does not see torch's allocations and `ru_maxrss` is a process-lifetime high-water
mark, so a step's peak is read as the kernel's VmHWM after resetting it (`/proc/self/clear_refs` <- "5", Linux >= 4.0)
just before the measured steps, minus VmRSS at that moment. Each side runs in its own fresh (spawned) process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` as well as `python -m bench.x`
    sys.path.insert(0, str(REPO_ROOT))

# glibc keeps freed heap memory resident and raises its mmap threshold after large frees (up to 32 MiB), so RSS
# would lag behind torch's live memory. A fixed small threshold makes every tensor-sized block an mmap that is
# returned to the kernel on free; set for spawned measurement processes (read by glibc at process start).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def set_threads(n: int = 1) -> None:
    """Pin torch's intra-op threads (one thread gives steadier ratios on a shared machine)."""
    import torch

    torch.set_num_threads(n)


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def rss_mib() -> float:
    """Current resident set size in MiB (falls back to ru_maxrss where /proc is missing)."""
    kib = _status_kib("VmRSS")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where not supported (then peaks are lifetime peaks)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size since start or since the last `reset_peak_rss()`, in MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def run_in_fresh_process(fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> Any:
    """Run a picklable top-level function in a new spawned interpreter and return its result."""
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})  # inherited by the child at spawn time
    try:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_sft_step(model_path: str, opts: Any, lr: float = 1e-5, total_steps: int = 1000, device: str | None = None):
    """(model, processor, optimizer, scheduler) exactly as SFTModule builds them: `configure_model` (our `build_vlm`)
    then `configure_optimizers` (AdamW with decay / no-decay groups, warmup-cosine schedule). `device`: where to move
    a non-quantized model before the optimizer is made (a QLoRA model is placed by `build_vlm` itself)."""
    from types import SimpleNamespace

    from lightning_modules.sft import SFTModule
    from lightning_modules.training import OptimConfig

    module = SFTModule(model_path, vlm=opts, optim=OptimConfig(lr=lr))
    module.configure_model()
    if device is not None and getattr(opts, "qlora", None) is None:
        module.model.to(device)
    module.trainer = SimpleNamespace(estimated_stepping_batches=total_steps)  # all configure_optimizers reads
    conf = module.configure_optimizers()
    module.trainer = None
    module.model.train()
    return module.model, module.processor, conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def sft_step(model: Any, batch: dict[str, Any], optimizer: Any, scheduler: Any) -> Any:
    """One step of SFTModule's automatic optimisation: supervised_loss, backward, AdamW step, schedule, zero_grad."""
    from lightning_modules.sft import supervised_loss

    loss, _ = supervised_loss(model, batch)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def versions(*packages: str) -> str:
    """'python 3.11.x, torch 2.x, ...' for the given distributions (missing ones are skipped)."""
    parts = [f"python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def count_params(module: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def fmt_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3f} B"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.1f} k"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def build_trained_tiny_vlm(
    folder: str | Path,
    data_file: str | Path,
    tokenizer: str = "bpe",
    hidden: int = 64,
    steps: int = 30,
    lr: float = 1e-2,
    batch_size: int = 4,
) -> Path:
    """A tiny random Qwen2.5-VL briefly fully fine-tuned (SFTModule's step) on `data_file` (messages format), so that
    it answers in one word and emits `<|im_end|>` (a random model never stops); built once into `folder`.

    Benchmarks of generation need this: with a model that never emits EOS every side runs the full max_new_tokens.
    """
    folder = Path(folder)
    if (folder / ".trained").exists():
        return folder
    import torch

    from assets.tiny import build_tiny_vlm
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.vlm import VLMOptions

    build_tiny_vlm(folder, tokenizer=tokenizer, hidden=hidden)
    torch.manual_seed(0)
    model, _, optimizer, scheduler = build_sft_step(
        str(folder), VLMOptions(dtype="float32", lora=None), lr=lr, total_steps=steps
    )
    data = VLMDataModule(model_path=str(folder), train_file=str(data_file), batch_size=batch_size, max_length=None)
    data.setup("fit")
    done = 0
    while done < steps:
        for batch in data.train_dataloader():
            sft_step(model, batch, optimizer, scheduler)
            done += 1
            if done == steps:
                break
    model.eval()
    model.save_pretrained(folder)  # weights only; the processor and tokenizer files stay as build_tiny_vlm wrote them
    (folder / ".trained").write_text("ok\n")
    return folder


def quiet_libraries() -> None:
    """Silence warnings, progress bars and library chatter (they would drown the figures)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def write_subset_json(source: str | Path, target: str | Path, n: int) -> Path:
    """The first `n` rows of an official-format JSON list, image paths made absolute, written to `target`."""
    import json

    source, target = Path(source), Path(target)
    rows = json.loads(source.read_text())[:n]
    for row in rows:
        for key in ("image", "images"):
            if key in row:
                paths = row[key] if isinstance(row[key], list) else [row[key]]
                absolute = [p if Path(p).is_absolute() else str(source.parent / p) for p in paths]
                row[key] = absolute if isinstance(row[key], list) else absolute[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows))
    return target


def describe_vlm(model: Any, processor: Any) -> str:
    """'params 0.69 M, hidden 64, 2 layers, tokenizer 1,001 tokens (lm_head rows 1,024), vision depth 2'."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    return (
        f"params {fmt_params(count_params(model))}, hidden {text.hidden_size}, {text.num_hidden_layers} layers, "
        f"tokenizer {len(processor.tokenizer):,} tokens (lm_head rows {text.vocab_size:,}), vision depth "
        f"{base.config.vision_config.depth}"
    )


def step_memory(side, steps: int) -> dict[str, float | bool]:
    """Peak RSS increase of `steps` calls of `side.step()` over the RSS right before them, after one warm-up step
    (which also allocates the AdamW state, the same size on every side). Call it in a fresh process."""
    import gc

    gc.collect()
    reset_peak_rss()
    before_first = rss_mib()
    side.step()
    first = peak_rss_mib() - before_first
    gc.collect()
    supported = reset_peak_rss()
    before = rss_mib()
    for _ in range(steps):
        side.step()
    return {"baseline_mib": before, "step_mib": peak_rss_mib() - before, "first_step_mib": first, "reset": supported}


@dataclass
class Side:
    """One side of a comparison: a step (returns the loss), what it computes, and optional statistics of its steps."""

    name: str
    step: Callable[[], float]
    info: dict[str, Any] = field(default_factory=dict)
    stats: Callable[[], dict[str, float]] = dict


@contextlib.contextmanager
def trl_compact_lm_head() -> Iterator[None]:
    """Make TRL's fused LM head score only supervised / completion positions, as it does where Triton runs (CUDA).

    On CPU, TRL 1.16 projects every position through lm_head (`compact = _use_triton(device)` in
    `trl.trainer.utils`); this switches only that decision (the CPU torch tiles still compute). Not stock TRL on CPU:
    an extra row that estimates how TRL's step behaves where its Triton path is on. Generation is unaffected.
    """
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


# TRL trainer arguments both baselines share: CPU, fp32, the ms-swift optimiser (AdamW, betas 0.9 / 0.95, wd 0.1,
# cosine), and no logging, saving, progress bars or workers that would add to the measured step.
TRL_QUIET_CPU = dict(
    weight_decay=0.1,
    adam_beta1=0.9,
    adam_beta2=0.95,
    optim="adamw_torch",
    lr_scheduler_type="cosine",
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    remove_unused_columns=False,
    report_to="none",
    save_strategy="no",
    logging_steps=10**6,
    dataloader_num_workers=0,
    seed=0,
    disable_tqdm=True,
)
