"""The difficulty-aware LightningDataModule for VLM SFT, GRPO and difficulty estimation.

Reads the official DC-SFT files (`datamodules/formats.py`), optionally keeps only a difficulty selection
(`datamodules/tiers.py`: SFT-M, SFT-EM, a pass-rate interval, a hard share), checks every row before training starts
(images readable, image tokens within `max_length`), and serves batches whose labels cover assistant answers only.

Max-length policy (the official `max_length 128` is shorter than an ImageNet image's tokens; paper.md caveat 1):
image tokens are never truncated and rows are never dropped silently. A row whose image tokens alone exceed
`max_length` is always an error; a row whose text pushes it over is handled by `overlength`: `error` (default),
`drop` (dropped, listed in the log and `overlength_rows.json`) or `truncate` (answer tokens cut from the right,
listed likewise).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from datamodules import tiers as tiers_lib
from datamodules.collate import IGNORE_INDEX, Collator, encode_sample, render_segments, tokenize_segments
from datamodules.formats import Sample, read_samples
from datamodules.images import MIN_PIXELS, OFFICIAL_TRAIN_MAX_PIXELS, image_size, load_image, num_image_tokens
from datamodules.sampler import ResumableSampler, shard

log = logging.getLogger(__name__)


class SampleDataset(Dataset):
    """Samples -> encoded items (images loaded and smart-resized lazily, so startup stays cheap)."""

    def __init__(self, samples: list[Sample], processor, min_pixels: int, max_pixels: int, generation: bool = False,
                 truncate_to: int | None = None) -> None:  # fmt: skip
        self.samples = samples
        self.processor = processor
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.generation = generation
        self.truncate_to = truncate_to

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        images = [load_image(p, self.min_pixels, self.max_pixels, where=f"{sample.source}: ") for p in sample.images]
        item = encode_sample(self.processor, sample, images, generation=self.generation)
        if self.truncate_to is not None and len(item["input_ids"]) > self.truncate_to:
            item["input_ids"] = item["input_ids"][: self.truncate_to]
            item["labels"] = item["labels"][: self.truncate_to]
        return item


def measure(processor, sample: Sample, min_pixels: int, max_pixels: int, generation: bool = False) -> tuple[int, int]:
    """(total tokens, image tokens) of a sample from image headers only (no decoding)."""
    counts = [num_image_tokens(*image_size(p, f"{sample.source}: "), min_pixels, max_pixels) for p in sample.images]
    ids, _ = tokenize_segments(processor.tokenizer, render_segments(processor, sample.messages, generation), counts)
    return len(ids), sum(counts)


class VLMDataModule(L.LightningDataModule):
    """Official-format VLM data with difficulty selection, length checks and resumable order.

    Args:
        model_path: checkpoint folder whose processor (tokenizer, chat template) encodes the data; linked from the
            model's `model_path` by train.py.
        train_file: training data (`messages`+`images` or `problem`/`solution`/`image`, JSON or JSONL).
        val_file: optional validation data (teacher-forced loss, `val/loss`).
        predict_file: prompts for `predict` runs (difficulty estimation); defaults to `train_file`.
        image_root: path prefix -> local folder, for the authors' absolute image paths.
        min_pixels: smart-resize lower bound.
        max_pixels: smart-resize upper bound (official training: 802,816, i.e. at most 1,024 image tokens).
        max_length: longest sequence in tokens (image tokens included); None for no limit.
        overlength: what to do with a row whose text exceeds max_length: `error`, `drop` or `truncate`.
        batch_size: training micro-batch per device.
        eval_batch_size: batch for validation and predict.
        num_workers: DataLoader workers (the official runs used 0).
        seed: data-order seed (order of epoch e uses seed + e).
        shuffle: shuffle the training data each epoch.
        difficulty_file: JSONL from difficulty estimation; enables the selection below.
        selection: preset: `sft` (all), `sft_m` (medium), `sft_em` (easy+medium), `sft_e`, `sft_h`.
        tiers: explicit tier list instead of a preset.
        pass_rate_range: closed pass-rate interval [lo, hi] instead of tiers.
        hard_share: share of the final selection drawn from the hard tier (paper Fig. 5: 0.05).
        selection_seed: seed for the hard-share draw.
        prompt_only: serve training batches as left-padded prompts without answers (GRPO rollouts).
    """

    def __init__(
        self,
        model_path: str = "",
        train_file: str | None = None,
        val_file: str | None = None,
        predict_file: str | None = None,
        image_root: dict[str, str] | None = None,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = OFFICIAL_TRAIN_MAX_PIXELS,
        max_length: int | None = 2048,
        overlength: Literal["error", "drop", "truncate"] = "error",
        batch_size: int = 1,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 42,
        shuffle: bool = True,
        difficulty_file: str | None = None,
        selection: str | None = None,
        tiers: list[str] | None = None,
        pass_rate_range: tuple[float, float] | None = None,
        hard_share: float = 0.0,
        selection_seed: int = 0,
        prompt_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.processor = None
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []
        self.predict_samples: list[Sample] = []
        self.predict_samples_all: list[Sample] = []  # before resume skipping: the output order
        self.predict_skip_ids: set[str] = set()  # set by DifficultyWriter on resume
        self._sampler: ResumableSampler | None = None
        self._resume: dict[str, int] = {}
        self.report: dict[str, Any] = {}

    # ----------------------------------------------------------------- setup
    def _load_processor(self):
        if self.processor is None:
            from lightning_modules.processor import load_processor

            if not self.hparams.model_path:
                raise ValueError("data.model_path is empty: set model.init_args.model_path (train.py links it)")
            self.processor = load_processor(self.hparams.model_path, self.hparams.min_pixels, self.hparams.max_pixels)
        return self.processor

    def select(self, samples: list[Sample], source: str) -> list[Sample]:
        """Keep the configured difficulty selection (all samples without a difficulty file)."""
        hp = self.hparams
        if hp.difficulty_file is None:
            if hp.selection not in (None, "sft") or hp.tiers or hp.pass_rate_range or hp.hard_share:
                raise ValueError("a difficulty selection was configured but data.difficulty_file is not set")
            return samples
        difficulty = tiers_lib.read_difficulty(hp.difficulty_file)
        ids = [s.id for s in samples]
        tiers_lib.check_matches(ids, difficulty, source, hp.difficulty_file)
        tier_list = hp.tiers if hp.tiers is not None else tiers_lib.preset_tiers(hp.selection or "sft")
        rng = tuple(hp.pass_rate_range) if hp.pass_rate_range is not None else None
        keep = set(tiers_lib.select(ids, difficulty, tier_list if rng is None else None, rng, hp.hard_share,
                                    hp.selection_seed))  # fmt: skip
        selected = [s for s in samples if s.id in keep]
        counts = tiers_lib.tier_counts(difficulty, [s.id for s in selected])
        self.report["selection"] = {"kept": len(selected), "of": len(samples), "tiers": counts}
        self._report_tiers(difficulty, len(selected), len(samples), counts)
        return selected

    def _report_tiers(self, difficulty, kept: int, total: int, counts: dict[str, int]) -> None:
        """Tier report at the start of fit: printed, saved in data_report.json, logged to TensorBoard."""
        from callbacks.difficulty_writer import log_tier_report
        from datamodules.tier_report import format_tier_report, tier_report

        report = tier_report(difficulty)
        self.report["tier_report"] = report
        print(format_tier_report(report), flush=True)
        print(f"[data] selection {self.hparams.selection or self.hparams.tiers or self.hparams.pass_rate_range}: "
              f"{kept} of {total} training items ({counts})", flush=True)  # fmt: skip
        if self.trainer is not None and self.trainer.is_global_zero:
            log_tier_report(self.trainer, report, difficulty, prefix="data/")

    def check_lengths(self, samples: list[Sample], generation: bool = False) -> list[Sample]:
        """Apply the max-length policy before any training; never silently."""
        hp, processor = self.hparams, self._load_processor()
        over: list[dict[str, Any]] = []
        for sample in samples:
            total, image_tokens = measure(processor, sample, hp.min_pixels, hp.max_pixels, generation)
            if hp.max_length is not None and image_tokens >= hp.max_length:
                raise ValueError(
                    f"{sample.source}: its images alone take {image_tokens} tokens, max_length is {hp.max_length}. "
                    f"Raise data.max_length above {image_tokens} or lower data.max_pixels."
                )
            if hp.max_length is not None and total > hp.max_length:
                over.append({"id": sample.id, "source": sample.source, "tokens": total, "image_tokens": image_tokens})
        if over:
            if hp.overlength == "error":
                first = over[0]
                raise ValueError(
                    f"{len(over)} rows exceed max_length {hp.max_length}, e.g. {first['source']} ({first['tokens']} "
                    "tokens). Raise data.max_length, or set data.overlength to 'drop' or 'truncate' (both reported)."
                )
            log.warning("%d rows exceed max_length %d and were %s: %s", len(over), hp.max_length,
                        "dropped" if hp.overlength == "drop" else "truncated", [o["source"] for o in over[:5]])  # fmt: skip
            self.report["overlength"] = {"policy": hp.overlength, "rows": over}
            if hp.overlength == "drop":
                ids = {o["id"] for o in over}
                samples = [s for s in samples if s.id not in ids]
        if not samples:
            raise ValueError("no rows left after the max-length policy")
        return samples

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self._load_processor()
        if stage in ("fit", None) and not self.train_samples:
            if hp.train_file is None:
                raise ValueError("data.train_file is required for fit")
            samples = self.select(read_samples(hp.train_file, hp.image_root), hp.train_file)
            self.train_samples = self.check_lengths(samples, generation=hp.prompt_only)
        if stage in ("fit", "validate", None) and hp.val_file and not self.val_samples:
            self.val_samples = self.check_lengths(read_samples(hp.val_file, hp.image_root))
        if stage == "predict" and not self.predict_samples:
            path = hp.predict_file or hp.train_file
            if path is None:
                raise ValueError("data.predict_file (or data.train_file) is required for predict")
            self.predict_samples = self.check_lengths(read_samples(path, hp.image_root), generation=True)
            self.predict_samples_all = list(self.predict_samples)
        if self.report and self.trainer is not None and self.trainer.log_dir:
            out = Path(self.trainer.log_dir) / "data_report.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            tiers_lib.atomic_write_text(out, json.dumps(self.report, indent=1))

    # ----------------------------------------------------------- dataloaders
    def _collator(self, padding_side: str) -> Collator:
        tok = self._load_processor().tokenizer
        return Collator(tok.pad_token_id, tok.convert_tokens_to_ids("<|image_pad|>"), padding_side)

    def _dataset(self, samples: list[Sample], generation: bool = False) -> SampleDataset:
        hp = self.hparams
        truncate = hp.max_length if hp.overlength == "truncate" else None
        return SampleDataset(samples, self.processor, hp.min_pixels, hp.max_pixels, generation, truncate)

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self._sampler = ResumableSampler(len(self.train_samples), self.hparams.seed, self.hparams.shuffle, rank, world)
        if self._resume:
            self._sampler.set_epoch(self._resume["epoch"])
            self._sampler.start = self._resume["batches"] * self.hparams.batch_size
            self._resume = {}
        prompt_only = self.hparams.prompt_only
        return DataLoader(self._dataset(self.train_samples, generation=prompt_only),
                          batch_size=self.hparams.batch_size, sampler=self._sampler,
                          collate_fn=self._collator("left" if prompt_only else "right"),
                          num_workers=self.hparams.num_workers, drop_last=False)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        if not self.val_samples:  # one placeholder batch, so that evaluation callbacks run in `validate`
            return DataLoader([{"placeholder": True}], batch_size=1, collate_fn=_placeholder)
        return DataLoader(self._dataset(self.val_samples), batch_size=self.hparams.eval_batch_size,
                          collate_fn=self._collator("right"), num_workers=self.hparams.num_workers)  # fmt: skip

    def predict_dataloader(self) -> DataLoader:
        todo = [s for s in self.predict_samples if s.id not in self.predict_skip_ids]
        if self.trainer is not None and self.trainer.world_size > 1:  # contiguous shard per rank, no padding
            todo = [todo[i] for i in shard(len(todo), self.trainer.global_rank, self.trainer.world_size)]
        return DataLoader(self._dataset(todo, generation=True),
                          batch_size=self.hparams.eval_batch_size, collate_fn=self._collator("left"),
                          num_workers=self.hparams.num_workers)  # fmt: skip

    # ------------------------------------------------------------ resumption
    def state_dict(self) -> dict[str, int]:
        """Epoch and batches consumed in it, so `fit --ckpt_path` continues the same order."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict) if state_dict else {}


def _placeholder(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"placeholder": True}


__all__ = ["VLMDataModule", "SampleDataset", "IGNORE_INDEX"]
