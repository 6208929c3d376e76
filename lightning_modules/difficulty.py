"""DifficultyEstimator: DC-SFT step 2 as a Lightning predict run.

For every training item, draw k answers from the (cold-started) model with the shared-prefill sampler (official
defaults: k 8, temperature 0.9, top-p 1.0, top-k 50, at most 128 new tokens) and score each with the task's scorer
from `datamodules/scoring.py`. Each item's RNG is seeded from (seed, item id), so the result does not depend on
batching, DDP rank or resume point. Rows go to `callbacks.difficulty_writer.DifficultyWriter`.

    python train.py predict --config configs/demo/difficulty.yaml
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch

from datamodules.collate import model_inputs
from datamodules.errors import checked
from datamodules.scoring import get_scorer
from lightning_modules.sampling import SamplingConfig, item_generator, sample_answers
from lightning_modules.vlm import VLMOptions, build_vlm, vlm_problems


def count_correct(
    model, processor, batch: dict[str, Any], sampling: SamplingConfig, score: Callable[[str, str], bool], seed: int
) -> tuple[list[int], list[list[str]]]:
    """k sampled answers per prompt of a left-padded batch (each item's RNG seeded from (seed, item id)) and how many
    of them `score` accepts: the one measurement behind difficulty estimation and its refreshes during SFT
    (`callbacks/difficulty_refresh.py`), so both give comparable pass rates."""
    device = batch["input_ids"].device
    generators = [item_generator(seed, item_id, device) for item_id in batch["ids"]]
    with torch.no_grad():
        _, texts = sample_answers(model, processor, model_inputs(batch), sampling, generators)
    correct = [
        sum(bool(score(answer, solution)) for answer in answers) for answers, solution in zip(texts, batch["solutions"])
    ]
    return correct, texts


class DifficultyEstimator(L.LightningModule):
    """Predict-only module: k sampled answers per item -> number correct.

    Args:
        model_path: the cold-started checkpoint (linked to data.model_path).
        vlm: builder options (`lora: null` to sample from the checkpoint as is; `adapter_path` for an adapter).
        sampling: k answers per item and their decoding (official: k 8, temperature 0.9, top-p 1.0, top-k 50, 128
            new tokens); `sampling.seed` seeds the per-item RNGs.
        scorer: `exact` (classification), `iou` (boxes, IoU >= 0.5), `math` (math-verify), `choice` (letters).
        keep_answers: store the k decoded answers in the difficulty file.
    """

    def __init__(
        self,
        model_path: str,
        vlm: VLMOptions = VLMOptions(lora=None),
        sampling: SamplingConfig = SamplingConfig(),
        scorer: str = "exact",
        keep_answers: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vlm", "sampling"])
        # copies: the defaults in the signature are shared instances
        self.vlm, self.sampling = copy.deepcopy(vlm), copy.deepcopy(sampling)
        problems = vlm_problems(self.vlm) + self.sampling.problems()
        if not self.sampling.do_sample:
            problems.append("sampling.do_sample must be true: k greedy answers are all the same")
        checked(problems, "difficulty")
        self.hparams.update(vlm=asdict(self.vlm), sampling=asdict(self.sampling))  # plain dicts
        self.score = get_scorer(scorer)  # fail on a bad scorer name before loading the model
        self.model = None
        self.processor = None

    def configure_model(self) -> None:
        if self.model is None:
            self.model, self.processor = build_vlm(self.hparams.model_path, self.vlm)
            self.model.eval()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        if not batch["ids"]:
            return []
        counts, texts = count_correct(self.model, self.processor, batch, self.sampling, self.score, self.sampling.seed)
        rows = []
        image_files = batch.get("image_files") or [None] * len(batch["ids"])
        for item_id, solution, files, answers, correct in zip(
            batch["ids"], batch["solutions"], image_files, texts, counts
        ):
            row = {
                "id": item_id,
                "correct": correct,
                "k": self.sampling.k,
                "pass_rate": correct / self.sampling.k,
                "solution": solution,
            }
            if files is not None:
                row["images"] = files
            if self.hparams.keep_answers:
                row["answers"] = answers
            rows.append(row)
        return rows
