"""The difficulty-aware LightningDataModule for VLM SFT, GRPO and difficulty estimation.

Reads the official DC-SFT files (`datamodules/formats.py`), optionally keeps only a difficulty selection
(`datamodules/tiers.py`: SFT-M, SFT-EM, a pass-rate interval, a hard share), checks every row before training starts
(images readable, image tokens within `max_length`), and serves batches whose labels cover assistant answers only.
Every batch goes through the one `Encoder` (`datamodules/collate.py`) that evaluation and sampling use too. With
re-tiering during SFT (`callbacks/difficulty_refresh.py`), training batches come from the whole training file through
a selection that may change mid-fit (`live_selection()`, `datamodules/live_selection.py`).

Max-length policy (the official `max_length 128` is shorter than an ImageNet image's tokens, so reproductions need a
larger limit): image tokens are never truncated and rows are never dropped silently. A row whose image tokens alone
exceed `max_length` is always an error; a row whose text pushes it over is handled by `overlength`: `error`
(default), `drop` or `truncate` (answer tokens cut from the right); dropped or truncated rows are listed in the log
and in `<log_dir>/data_report.json`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from datamodules.collate import IGNORE_INDEX, Encoder
from datamodules.difficulty_file import check_items, check_matches, done_rows, item_key, read_difficulty
from datamodules.errors import checked
from datamodules.files import atomic_write_json
from datamodules.formats import Sample, read_samples
from datamodules.images import verify_images
from datamodules.live_selection import LiveSampler, LiveSelection
from datamodules.noise import LabelNoise, noisy_answers, with_answers
from datamodules.processor import load_processor
from datamodules.sampler import ResumableSampler, shard
from datamodules.tier_report import format_tier_report, log_tier_report, tier_report
from datamodules.tiers import Selection, apply_selection, tier_counts

log = logging.getLogger(__name__)


class SampleDataset(Dataset):
    """Samples -> encoded items (images loaded and smart-resized lazily, so startup stays cheap)."""

    def __init__(
        self,
        samples: list[Sample],
        encoder: Encoder,
        generation: bool = False,
        truncate_to: int | None = None,
        tiers: dict[str, str] | None = None,
    ) -> None:
        self.samples = samples
        self.encoder = encoder
        self.generation = generation
        self.truncate_to = truncate_to
        self.tiers = tiers or {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item = self.encoder.encode(sample, generation=self.generation)
        if self.truncate_to is not None and len(item["input_ids"]) > self.truncate_to:
            item["input_ids"] = item["input_ids"][: self.truncate_to]
            item["labels"] = item["labels"][: self.truncate_to]
        if sample.id in self.tiers:
            item["tier"] = self.tiers[sample.id]
        item["image_files"] = item_key(sample.solution, sample.images)[1]
        return item


class VLMDataModule(L.LightningDataModule):
    """Official-format VLM data with difficulty selection, length checks and resumable order.

    Args:
        model_path: checkpoint folder whose processor (tokenizer, chat template, pixel bounds) encodes the data;
            linked from the model's `model_path` by train.py.
        train_file: training data (`messages`+`images` or `problem`/`solution`/`image`, JSON or JSONL).
        val_file: optional validation data (teacher-forced loss, `val/loss`).
        predict_file: prompts for `predict` runs (difficulty estimation); defaults to `train_file`.
        image_root: path prefix -> local folder, for the authors' absolute image paths.
        min_pixels: smart-resize lower bound; None = the bound saved with the checkpoint's processor.
        max_pixels: smart-resize upper bound; None = the checkpoint's (official DC-SFT training: 802,816, i.e. at most
            1,024 image tokens; the Qwen2.5-VL checkpoints ship 12,845,056).
        max_length: longest sequence in tokens (image tokens included); None for no limit.
        overlength: what to do with a row whose text exceeds max_length: `error`, `drop` or `truncate`.
        batch_size: training micro-batch per device.
        eval_batch_size: batch for validation and predict.
        num_workers: DataLoader workers (the official runs used 0).
        seed: data-order seed (order of epoch e uses seed + e).
        shuffle: shuffle the training data each epoch.
        difficulty_file: JSONL from difficulty estimation: enables `selection`, and batches then carry each item's
            tier (GRPO logs rewards per tier).
        selection: which items of the difficulty file to train on (None = all).
        prompt_only: serve training batches as left-padded prompts without answers (GRPO rollouts).
        predict_done_file: a difficulty output whose finished rows (file and `.shards/`) are skipped by `predict`;
            linked from the DifficultyWriter's `output` by train.py.
        verify_images: decode every image once at setup (before the model loads), so a truncated or corrupt file is
            named with its record now rather than crashing the run at its batch.
        label_noise: replace a seeded share of the training / predict answers by another valid answer (off by
            default); the replaced items are in `noisy` and `data_report.json`.
    """

    def __init__(
        self,
        model_path: str = "",
        train_file: str | None = None,
        val_file: str | None = None,
        predict_file: str | None = None,
        image_root: dict[str, str] | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_length: int | None = 2048,
        overlength: Literal["error", "drop", "truncate"] = "error",
        batch_size: int = 1,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 42,
        shuffle: bool = True,
        difficulty_file: str | None = None,
        selection: Selection = Selection(),
        prompt_only: bool = False,
        predict_done_file: str | None = None,
        verify_images: bool = True,
        label_noise: LabelNoise = LabelNoise(),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["selection", "label_noise"])
        self.selection, self.label_noise = selection, label_noise
        checked(self.problems(), "data")
        self.hparams["selection"] = vars(self.selection).copy()  # plain dicts: checkpoints load with weights_only
        self.hparams["label_noise"] = vars(self.label_noise).copy()
        self.noisy: dict[str, tuple[str, str]] = {}  # item id -> (true answer, noisy answer)
        self.encoder: Encoder | None = None
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []
        self.predict_samples: list[Sample] = []
        self.tiers: dict[str, str] = {}
        self._train_file_samples: list[Sample] = []  # every training-file row, before the selection
        self.pool_samples: list[Sample] = []  # the same, length-checked: the dataset of a live selection
        self.live: LiveSelection | None = None
        self._sampler: ResumableSampler | LiveSampler | None = None
        self._resume: dict[str, int] = {}
        self.report: dict[str, Any] = {}

    def problems(self) -> list[str]:
        """Invalid options, all at once (checked before anything is read or loaded)."""
        hp, out = self.hparams, self.selection.problems() + self.label_noise.problems()
        for name in ("batch_size", "eval_batch_size"):
            if hp[name] < 1:
                out.append(f"data.{name} must be >= 1, got {hp[name]}")
        if hp.max_length is not None and hp.max_length < 1:
            out.append(f"data.max_length must be >= 1 or null, got {hp.max_length}")
        if hp.num_workers < 0:
            out.append(f"data.num_workers must be >= 0, got {hp.num_workers}")
        for name in ("min_pixels", "max_pixels"):
            if hp[name] is not None and hp[name] < 28 * 28:
                out.append(f"data.{name} must be at least 784 (one 28x28 block) or null, got {hp[name]}")
        return out

    # ----------------------------------------------------------------- setup
    def _encoder(self) -> Encoder:
        if self.encoder is None:
            hp = self.hparams
            if not hp.model_path:
                raise ValueError("data.model_path is empty: set model.init_args.model_path (train.py links it)")
            self.encoder = Encoder(load_processor(hp.model_path, hp.min_pixels, hp.max_pixels))
        return self.encoder

    def select(self, samples: list[Sample], source: str) -> list[Sample]:
        """Keep the configured difficulty selection (all samples without a difficulty file)."""
        hp, selection = self.hparams, self.selection
        if hp.difficulty_file is None:
            if not selection.keeps_all():
                raise ValueError(f"data.selection ({selection.describe()}) needs data.difficulty_file")
            return samples
        difficulty = read_difficulty(hp.difficulty_file)
        ids = [s.id for s in samples]
        check_matches(ids, difficulty, source, hp.difficulty_file)
        check_items({s.id: item_key(s.solution, s.images) for s in samples}, difficulty, source, hp.difficulty_file)
        self.tiers = {i: difficulty[i].tier for i in ids}
        keep = set(apply_selection(ids, difficulty, selection))
        selected = [s for s in samples if s.id in keep]
        counts = tier_counts(difficulty, [s.id for s in selected])
        report = tier_report(difficulty, noisy=set(self.noisy))
        self.report.update(
            {"selection": {"kept": len(selected), "of": len(samples), "tiers": counts}, "tier_report": report}
        )
        print(format_tier_report(report), flush=True)
        print(
            f"[data] selection {selection.describe()}: {len(selected)} of {len(samples)} training items ({counts})",
            flush=True,
        )
        if self.trainer is not None and self.trainer.is_global_zero:
            writer = getattr(self.trainer.logger, "experiment", None) if self.trainer.logger else None
            log_tier_report(writer, report, difficulty, self.trainer.global_step, prefix="data/")
        return selected

    def check_lengths(self, samples: list[Sample], generation: bool = False) -> list[Sample]:
        """Apply the max-length policy before any training; never silently."""
        hp, encoder = self.hparams, self._encoder()
        over: list[dict[str, Any]] = []
        for sample in samples:
            try:
                total, image_tokens = encoder.measure(sample, generation)
            except ValueError as err:
                if str(err).startswith(sample.source):
                    raise
                raise ValueError(f"{sample.source}: {err}") from None
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
            log.warning(
                "%d rows exceed max_length %d and were %s: %s",
                len(over),
                hp.max_length,
                "dropped" if hp.overlength == "drop" else "truncated",
                [o["source"] for o in over[:5]],
            )
            self.report["overlength"] = {"policy": hp.overlength, "rows": over}
            if hp.overlength == "drop":
                ids = {o["id"] for o in over}
                samples = [s for s in samples if s.id not in ids]
        if not samples:
            raise ValueError("no rows left after the max-length policy")
        return samples

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self._encoder()
        if stage in ("fit", None) and not self.train_samples:
            if hp.train_file is None:
                raise ValueError("data.train_file is required for fit")
            self._train_file_samples = self._read(hp.train_file)
            samples = self.select(self._train_file_samples, hp.train_file)
            self.train_samples = self.check_lengths(samples, generation=hp.prompt_only)
            if hp.prompt_only:
                require_solutions(self.train_samples, "GRPO's rewards score every answer against it")
            self._verify(self.train_samples)
        if stage in ("fit", "validate", None) and hp.val_file and not self.val_samples:
            self.val_samples = self.check_lengths(read_samples(hp.val_file, hp.image_root))
            self._verify(self.val_samples)
        if stage == "predict" and not self.predict_samples:
            path = hp.predict_file or hp.train_file
            if path is None:
                raise ValueError("data.predict_file (or data.train_file) is required for predict")
            self.predict_samples = self.check_lengths(self._read(path), generation=True)
            require_solutions(self.predict_samples, "difficulty estimation scores every answer against it")
            self._verify(self.predict_samples)
        if self.report and self.trainer is not None and self.trainer.log_dir:
            atomic_write_json(Path(self.trainer.log_dir) / "data_report.json", self.report)

    def live_selection(self) -> LiveSelection:
        """Serve training batches from the whole training file through a selection that may change during the fit
        (`datamodules/live_selection.py`); it starts as the configured selection, so the order is a static run's until
        it changes. Called by the DifficultyRefresh callback after `setup("fit")`, before any dataloader exists. Every
        row is then length-checked and its images verified, since any may be selected later."""
        if self.live is None:
            if not self.train_samples:
                raise RuntimeError("live_selection() needs setup('fit') first")
            chosen = {s.id for s in self.train_samples}
            self.pool_samples = self.check_lengths(self._train_file_samples, generation=self.hparams.prompt_only)
            self._verify([s for s in self.pool_samples if s.id not in chosen])
            position = {s.id: i for i, s in enumerate(self.pool_samples)}
            selected = [position[s.id] for s in self.train_samples]
            self.live = LiveSelection(
                [s.id for s in self.pool_samples], selected, self.hparams.seed, self.hparams.shuffle
            )
        return self.live

    def _read(self, path: str) -> list[Sample]:
        """A training / predict file, with the configured label noise applied (same items, same answers, any file)."""
        samples = read_samples(path, self.hparams.image_root)
        if self.label_noise.share > 0:
            self.noisy = noisy_answers(samples, self.label_noise)
            samples = with_answers(samples, self.noisy)
            self.report["label_noise"] = {
                "share": self.label_noise.share,
                "items": len(self.noisy),
                "replaced": {i: list(p) for i, p in self.noisy.items()},
            }
            print(f"[data] label noise: {len(self.noisy)} of {len(samples)} answers replaced", flush=True)
        return samples

    def _verify(self, samples: list[Sample]) -> None:
        if self.hparams.verify_images:
            verify_images({path: s.source for s in samples for path in s.images})

    @property
    def predict_ids(self) -> list[str]:
        """Ids of every predict item, in file order (the order of the difficulty output)."""
        return [s.id for s in self.predict_samples]

    # ----------------------------------------------------------- dataloaders
    def _dataset(self, samples: list[Sample], generation: bool = False) -> SampleDataset:
        hp = self.hparams
        truncate = hp.max_length if hp.overlength == "truncate" else None
        return SampleDataset(samples, self._encoder(), generation, truncate, self.tiers)

    def _collate(self, padding_side: str) -> functools.partial:
        return functools.partial(self._encoder().collate, padding_side=padding_side)

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        samples = self.train_samples
        if self.live is not None:
            samples, self._sampler = self.pool_samples, LiveSampler(self.live, rank, world)
        else:
            self._sampler = ResumableSampler(len(samples), self.hparams.seed, self.hparams.shuffle, rank, world)
        if self._resume:
            self._sampler.resume(self._resume["epoch"], self._resume["batches"] * self.hparams.batch_size)
            self._resume = {}
        prompt_only = self.hparams.prompt_only
        return DataLoader(
            self._dataset(samples, generation=prompt_only),
            batch_size=self.hparams.batch_size,
            sampler=self._sampler,
            collate_fn=self._collate("left" if prompt_only else "right"),
            num_workers=self.hparams.num_workers,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        if not self.val_samples:  # one empty batch, so that evaluation callbacks run in `validate`
            return DataLoader([[]], batch_size=None, collate_fn=self._collate("right"))
        return DataLoader(
            self._dataset(self.val_samples),
            batch_size=self.hparams.eval_batch_size,
            collate_fn=self._collate("right"),
            num_workers=self.hparams.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        done = set(done_rows(self.hparams.predict_done_file)) if self.hparams.predict_done_file else set()
        todo = [s for s in self.predict_samples if s.id not in done]
        if self.trainer is not None and self.trainer.world_size > 1:  # contiguous shard per rank, no padding
            todo = [todo[i] for i in shard(len(todo), self.trainer.global_rank, self.trainer.world_size)]
        return self.prompt_dataloader(todo)

    def prompt_dataloader(self, samples: list[Sample], batch_size: int | None = None) -> DataLoader:
        """Left-padded prompts without answers, in order (difficulty estimation and its refreshes during SFT)."""
        return DataLoader(
            self._dataset(samples, generation=True),
            batch_size=batch_size or self.hparams.eval_batch_size,
            collate_fn=self._collate("left"),
            num_workers=self.hparams.num_workers,
        )

    # ------------------------------------------------------------ resumption
    def state_dict(self) -> dict[str, int]:
        """Epoch and batches consumed in it, so `fit --ckpt_path` continues the same order."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict) if state_dict else {}


def require_solutions(samples: list[Sample], why: str) -> None:
    """Every sample needs a gold answer (`solution`, or the last assistant turn): one error lists the records."""
    missing = [s.source for s in samples if not (s.solution or "").strip()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} record(s) have no answer ({why}): {shown}. Add a 'solution' to each.")


__all__ = ["VLMDataModule", "SampleDataset", "IGNORE_INDEX"]
