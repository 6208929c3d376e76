"""Generic generative evaluation at epoch ends (and/or every N steps) and in standalone `validate` runs.

Each configured benchmark (`datamodules/benchmarks/`: MMMU, MathVista, ImageNet folders, DC-SFT JSON) yields items;
this callback generates answers in batches through the shared-prefill sampler (greedy by default), shards items
contiguously across DDP ranks and gathers them (as the official `test_dp.py`), scores them with the benchmark's
official scorer, logs `val/<benchmark>/acc` (accuracy in %, two decimals as the official scripts print) plus
breakdowns, and writes one predictions JSONL per evaluation. Dropout is off while generating and restored after.

    python train.py validate --config configs/eval/imagenet_a.yaml
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from datamodules.benchmarks.base import Benchmark, EvalItem
from datamodules.collate import Encoder, model_inputs
from datamodules.files import atomic_write_text
from datamodules.formats import IMAGE_MARKER, Sample
from datamodules.images import open_rgb
from datamodules.processor import pixel_bounds, with_pixel_bounds
from datamodules.sampler import shard
from lightning_modules.sampling import SamplingConfig, inference_mode, sample_answers


def subset(items: list[EvalItem], limit: int | None, seed: int) -> list[EvalItem]:
    """All items, or `limit` of them chosen with a fixed seed (kept in their original order)."""
    if limit is None or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def check_images(name: str, items: list[EvalItem]) -> None:
    """Decode every image of a benchmark's items; one error names each broken one with its item id."""
    broken = []
    for item in items:
        for source in item.image_sources():
            try:
                open_rgb(source, f"{name} item {item.id}: ")
            except (ValueError, FileNotFoundError) as err:
                broken.append(str(err))
    if broken:
        shown = "\n  ".join(broken[:10]) + (f"\n  ... and {len(broken) - 10} more" if len(broken) > 10 else "")
        raise ValueError(
            f"{len(broken)} evaluation image(s) cannot be decoded:\n  {shown}\n"
            "(set eval.init_args.verify_images false to skip this check)"
        )


def summarize(benchmark: Benchmark, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy (%), fallback share and per-group accuracies, keyed by metric name."""
    name = benchmark.name
    n = len(results)
    metrics = {
        f"val/{name}/acc": round(100.0 * sum(r["correct"] for r in results) / max(n, 1), 2),
        f"val/{name}/fallback_rate": 100.0 * sum(r["fallback"] for r in results) / max(n, 1),
    }
    groups: dict[str, list[bool]] = defaultdict(list)
    for item, result in zip(items, results):
        for group, values in benchmark.breakdown_keys(item).items():
            for value in values:
                groups[f"val/{name}/{group}/{value}/acc"].append(result["correct"])
    for key, flags in groups.items():
        metrics[key] = 100.0 * sum(flags) / len(flags)
    sums: dict[str, float] = defaultdict(float)
    for result in results:  # per-item numbers (IoUs, Ref-L4 hits, ...) averaged over all items
        for key, value in (result.get("values") or {}).items():
            sums[key] += value
    for key, total in sums.items():
        metrics[f"val/{name}/{key}"] = total / max(n, 1)
    metrics.update({f"val/{name}/{key}": value for key, value in benchmark.aggregate(items, results).items()})
    return metrics


class GenerativeEval(L.Callback):
    """Evaluate benchmarks by generation; logs `val/<name>/acc` and writes predictions JSONL.

    Args:
        benchmarks: benchmark objects (class_path/init_args in YAML); none = the callback does nothing.
        every_n_epochs: evaluate at the end of every N-th training epoch (0 = never).
        every_n_steps: also evaluate every N optimizer steps (0 = never).
        at_fit_start: evaluate once before training (the starting point of the curve).
        at_fit_end: evaluate when training ends, unless that step was just evaluated.
        limit: evaluate at most this many items per benchmark (chosen with `subset_seed`); None = all.
        subset_seed: seed for `limit` and the MMMU random-letter fallback.
        batch_size: prompts per generation batch.
        max_new_tokens: generation budget (official: 128); a benchmark's own `max_new_tokens` attribute wins.
        repetition_penalty: Hugging Face's repetition penalty for greedy decoding (the paper's math evaluation: 1.1).
        min_pixels: image resize lower bound; None = the bound saved with the model's processor.
        max_pixels: image resize upper bound; None = the model's (the official eval leaves qwen-vl-utils' default,
            12,845,056, which the Qwen2.5-VL checkpoints also ship).
        output_dir: where predictions go; default `<log_dir>/predictions`.
        breakdowns: log per-group accuracies (subject, class, ...) besides the overall accuracy.
        verify_images: decode every evaluated image once at setup, so a broken file is named before training.
    """

    def __init__(
        self,
        benchmarks: list[Benchmark] | None = None,
        every_n_epochs: int = 1,
        every_n_steps: int = 0,
        at_fit_start: bool = False,
        at_fit_end: bool = False,
        limit: int | None = None,
        subset_seed: int = 42,
        batch_size: int = 16,
        max_new_tokens: int = 128,
        repetition_penalty: float = 1.0,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        output_dir: str | None = None,
        breakdowns: bool = True,
        verify_images: bool = True,
    ) -> None:
        self.benchmarks = list(benchmarks or [])
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.at_fit_start = at_fit_start
        self.at_fit_end = at_fit_end
        self.seconds = 0.0  # total time spent evaluating (to separate training from evaluation wall time)
        self.limit = limit
        self.subset_seed = subset_seed
        self.batch_size = batch_size
        self.repetition_penalty = repetition_penalty
        self.max_new_tokens = max_new_tokens
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.output_dir = output_dir
        self.breakdowns = breakdowns
        self.verify_images = verify_images
        self._items: dict[str, list[EvalItem]] = {}
        self.last_metrics: dict[str, float] = {}
        self._last_step = -1
        self._warned: set[str] = set()

    # ------------------------------------------------------------- schedule
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for bench in self.benchmarks:  # load (and validate) files before any expensive work
            if bench.name not in self._items:
                items = subset(bench.load(), self.limit, self.subset_seed)
                if self.verify_images:  # a broken image must not crash the fit at its first evaluation
                    check_images(bench.name, items)
                self._items[bench.name] = items

    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_fit_start:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._last_step = trainer.global_step
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_fit_end and self._last_step != trainer.global_step:
            self._last_step = trainer.global_step
            self.evaluate(trainer, pl_module, log=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step  # once per optimizer step, also under gradient accumulation
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def generate(self, pl_module, items: list[EvalItem], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers for `items`, in order (encoded by the same `Encoder` as training data)."""
        processor, model = pl_module.processor, pl_module.model
        encoder = Encoder(processor, self.min_pixels, self.max_pixels)
        budget = max_new_tokens or self.max_new_tokens
        cfg = SamplingConfig(k=1, max_new_tokens=budget, do_sample=False, repetition_penalty=self.repetition_penalty)
        answers: list[str] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            sources = [item.image_sources() for item in chunk]
            samples = [
                Sample(item.id, [{"role": "user", "content": IMAGE_MARKER * len(src) + item.prompt}], [])
                for item, src in zip(chunk, sources)
            ]
            batch = encoder.prompts(samples, images=sources)
            batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            _, texts = sample_answers(model, processor, model_inputs(batch), cfg)
            answers += [item_texts[0] for item_texts in texts]
        return answers

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, log: bool = True) -> dict[str, float]:
        """Run every benchmark now; returns (and logs) the metrics and writes `metrics.json` beside predictions."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        with inference_mode(pl_module.model):  # dropout off; train mode restored afterwards
            for bench in self.benchmarks:
                metrics.update(self._evaluate_one(trainer, pl_module, bench))
        for key, value in metrics.items():
            if not (self.breakdowns or key.count("/") == 2):  # val/<name>/acc and val/<name>/fallback_rate always
                continue
            if log:
                pl_module.log(key, value, rank_zero_only=True, sync_dist=False)
            else:  # on_train_end does not allow self.log: write to the logger directly
                for logger in trainer.loggers:
                    logger.log_metrics({key: value}, step=trainer.global_step)
        self.seconds += time.perf_counter() - t0
        self.last_metrics = metrics
        if trainer.is_global_zero:
            summary = {
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "eval_seconds": self.seconds,
                "metrics": {k: v for k, v in metrics.items() if k.count("/") == 2},
            }
            atomic_write_text(self._root(trainer) / "metrics.json", json.dumps(summary, indent=1))
        return metrics

    def _evaluate_one(self, trainer, pl_module, bench: Benchmark) -> dict[str, float]:
        items = self._items[bench.name]
        part = shard(len(items), trainer.global_rank, trainer.world_size)
        t0 = time.perf_counter()
        budget = getattr(bench, "max_new_tokens", None)  # e.g. 4,096 for chain-of-thought math benchmarks
        local = list(zip(part, self.generate(pl_module, [items[i] for i in part], budget)))
        gathered = [local]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
        responses = dict(pair for chunk in gathered for pair in chunk)
        rng = random.Random(self.subset_seed)
        bounds = pixel_bounds(with_pixel_bounds(pl_module.processor, self.min_pixels, self.max_pixels))
        bench.set_pixel_bounds(*bounds)
        self._warn_frame_shift(trainer, pl_module, bench, bounds)
        results = []
        for index, item in enumerate(items):
            score = bench.score(item, responses[index], rng)
            row = {
                "id": item.id,
                "prompt": item.prompt,
                "response": responses[index],
                "extracted": score.extracted,
                "gold": _jsonable(item.gold),
                "correct": bool(score.correct),
                "fallback": bool(score.fallback),
            }
            results.append(row | ({"values": score.values} if score.values else {}) | (score.details or {}))
        metrics = summarize(bench, items, results)
        elapsed = time.perf_counter() - t0
        rank_zero_info(
            f"[eval] {bench.name}: acc {metrics[f'val/{bench.name}/acc']:.2f} on {len(items)} items "
            f"({len(items) / max(elapsed, 1e-9):.1f} items/s)"
        )
        if trainer.is_global_zero:
            self._write(trainer, bench.name, results, bench.tables(items, results))
        return metrics

    def _warn_frame_shift(self, trainer, pl_module, bench: Benchmark, bounds: tuple[int, int]) -> None:
        """Grounding answers are pixel positions: training and evaluating at different pixel bounds changes the frame of
        every image the two bounds resize differently (the official scripts train at 802,816 and test at 12.8 M)."""
        hparams = getattr(getattr(trainer, "datamodule", None), "hparams", None)
        if getattr(bench, "box_frame", None) is None or hparams is None or bench.name in self._warned:
            return
        train = pixel_bounds(
            with_pixel_bounds(pl_module.processor, hparams.get("min_pixels"), hparams.get("max_pixels"))
        )
        if train != bounds:
            self._warned.add(bench.name)
            rank_zero_info(
                f"[eval] warning: {bench.name} is evaluated at pixel bounds {bounds} but training used {train}: images "
                f"resized differently answer in another frame (box_frame {bench.box_frame!r}); set the eval callback's "
                "min_pixels / max_pixels to the training ones to compare in one frame"
            )

    def _root(self, trainer) -> Path:
        return Path(self.output_dir or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")

    def _write(self, trainer, name: str, results: list[dict[str, Any]], tables: dict[str, Any] | None = None) -> None:
        """Predictions as `<name>/epoch=E-step=S.jsonl`, and the benchmark's long tables (e.g. Ref-L4 per class) as
        `<name>/epoch=E-step=S.tables.json` beside them."""
        path = self._root(trainer) / name / f"epoch={trainer.current_epoch}-step={trainer.global_step}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        if tables:
            atomic_write_text(path.with_suffix(".tables.json"), json.dumps(tables, indent=1, ensure_ascii=False))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)
