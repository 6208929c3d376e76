"""GRPOModule: group-relative policy optimisation of a VLM with our own loss (`grpo_loss.py`).

Each training step: G completions per prompt from the shared-prefill sampler (official: G 8, temperature 0.9, top-p
1.0, top-k 50, at most 128 new tokens) -> rewards from `datamodules/scoring.py` (a weighted sum of named scorers) ->
group advantages -> reference log-probs from the same weights with the LoRA adapter disabled (no second model copy;
a frozen copy only when training without LoRA) -> mu >= 1 optimisation passes on the clipped surrogate + beta k3 KL.
Manual optimisation, so mu passes and our own gradient accumulation (`grad_accum`) live in one place.

Logged every step: reward mean/std, the share of groups whose rewards are all equal (the paper's implicit filter)
split into all-correct / all-wrong, per difficulty tier when a difficulty file is given, KL, clip fractions,
completion length, entropy, and a few sample completions as TensorBoard text; group counts over all ranks
(`train/groups_drawn|kept|all_correct|all_wrong`, `train/resample_rounds`).

Optional group filtering (`group_filter`, off by default; `lightning_modules/group_filter.py`): train only on groups
with reward spread, refilling the batch with fresh prompts. Every run appends each group's outcome to
`<log dir>/rollouts.jsonl` (`datamodules/rollout_difficulty.py` merges such logs into a difficulty file).

    python train.py fit --config configs/demo/grpo.yaml
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device, rank_zero_info

from datamodules.collate import IGNORE_INDEX, model_inputs
from datamodules.errors import checked
from datamodules.rollout_difficulty import append_rollouts, rollout_row
from datamodules.scoring import get_scorer
from lightning_modules.group_filter import (
    GroupFilter,
    concat_groups,
    concat_prompt_batches,
    drawn_groups,
    fill_groups,
    refill_indices,
    take_groups,
    take_rows,
)
from lightning_modules.grpo_loss import LOSS_TYPES, group_advantages, grpo_loss, zero_std_groups
from lightning_modules.rollout import build_sequences, sequence_logprobs
from lightning_modules.sampling import (
    SamplingConfig,
    inference_mode,
    item_generator,
    sample_answers,
)
from lightning_modules.training import (
    OptimConfig,
    RNGResume,
    check_export_hook,
    export_hook,
    load_trainable_hook,
    optimizers_hook,
    save_trainable_hook,
)
from lightning_modules.vlm import VLMOptions, build_vlm, vlm_problems

REFILL_SEED = 7_919
"""Rollout-seed offset of a refill round (round 0 keeps plain GRPO's seed, so a repeated item is sampled afresh)."""
COUNTS = ("units", "kept", "drawn", "all_correct", "all_wrong")
"""Per-rank counts gathered once per step (units: the loss's normaliser, sequences or tokens, of the kept groups)."""


@dataclass
class GRPOConfig:
    """The GRPO objective (`lightning_modules/grpo_loss.py`); defaults are the official DC-SFT GRPO settings
    (`examples/train/grpo_lora.sh` on ms-swift 3.6: loss `grpo`, clip 0.2, beta 0.04, scaled rewards, mu 1)."""

    beta: float = 0.04
    """KL weight (k3 estimator against the adapter-free reference); 0 skips the reference pass."""
    epsilon_low: float = 0.2
    """Lower clip range of the importance ratio."""
    epsilon_high: float = 0.2
    """Upper clip range (DAPO's clip-higher uses e.g. 0.28)."""
    loss_type: str = "grpo"
    """Aggregation: `grpo` (per-sequence mean), `bnpo`, `dapo` or `dr_grpo`."""
    scale_rewards: bool = True
    """Divide advantages by the group std (off = Dr. GRPO)."""
    num_iterations: int = 1
    """mu: optimisation passes per generation batch."""
    grad_accum: int = 1
    """Prompt batches per optimizer step (Lightning's accumulate_grad_batches does not apply to manual optimisation)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (ms-swift default 1.0)."""

    def problems(self) -> list[str]:
        out = []
        if self.loss_type not in LOSS_TYPES:
            out.append(f"grpo.loss_type {self.loss_type!r} not in {LOSS_TYPES}")
        if self.beta < 0:
            out.append(f"grpo.beta must be >= 0, got {self.beta}")
        if self.num_iterations < 1 or self.grad_accum < 1:
            out.append("grpo.num_iterations and grpo.grad_accum must be >= 1")
        if self.num_iterations > 1 and self.grad_accum > 1:
            out.append("grpo.num_iterations > 1 needs grad_accum 1 (each pass is one optimizer step)")
        return out


class GRPOModule(L.LightningModule):
    """GRPO on prompts from `VLMDataModule(prompt_only=True)`.

    Args:
        model_path: starting checkpoint (the cold-started model); linked to data.model_path.
        vlm: builder options (official: LoRA r 32, alpha 64, dropout 0.05).
        sampling: rollout settings; `k` is the group size G (official: G 8, temperature 0.9, top-p 1.0, top-k 50,
            128 new tokens).
        grpo: the objective (beta, clip range, loss type, reward scaling, mu, accumulation, clipping).
        optim: AdamW + warmup-cosine settings, as in SFTModule.
        rewards: scorer name -> weight (`exact`, `iou`, `math`, `choice`); the first is the main scorer, whose
            verdict counts an answer as correct in the group counts and the rollout log.
        log_completions_every: log sample completions as TensorBoard text every N steps (0 = never).
        export_dir: save the merged model + processor at fit end.
        group_filter: drop groups without reward spread and refill the batch (off by default: the paper's GRPO).
        rollout_log: file name, in the logger's log dir, of the per-group outcome log (null = none; nothing is
            written without a logger).
    """

    def __init__(
        self,
        model_path: str,
        vlm: VLMOptions = VLMOptions(),
        sampling: SamplingConfig = SamplingConfig(),
        grpo: GRPOConfig = GRPOConfig(),
        optim: OptimConfig = OptimConfig(),
        rewards: dict[str, float] | None = None,
        log_completions_every: int = 10,
        export_dir: str | None = None,
        group_filter: GroupFilter = GroupFilter(),
        rollout_log: str | None = "rollouts.jsonl",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vlm", "sampling", "grpo", "optim", "group_filter"])
        # copies: the defaults in the signature are shared instances
        self.vlm, self.sampling, self.grpo, self.optim, self.group_filter = (
            copy.deepcopy(vlm),
            copy.deepcopy(sampling),
            copy.deepcopy(grpo),
            copy.deepcopy(optim),
            copy.deepcopy(group_filter),
        )
        problems = vlm_problems(self.vlm) + self.sampling.problems() + self.grpo.problems() + self.optim.problems()
        problems += self.group_filter.problems()
        if self.sampling.k < 2:
            problems.append("sampling.k (the group size G) must be >= 2: advantages are relative to the group")
        if not self.sampling.do_sample:
            problems.append("sampling.do_sample must be true: a greedy group has identical answers")
        checked(problems, "GRPO")
        self.hparams.update(
            vlm=asdict(self.vlm),
            sampling=asdict(self.sampling),
            grpo=asdict(self.grpo),
            optim=asdict(self.optim),
            group_filter=asdict(self.group_filter),
        )
        self.reward_fns = {name: (get_scorer(name), weight) for name, weight in (rewards or {"exact": 1.0}).items()}
        self.automatic_optimization = False
        self.model = None
        self.processor = None
        self.ref_model = None
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.rng = RNGResume()
        self.last_rollout: dict[str, Any] = {}
        self.rollout_log_path: Path | None = None
        self._positions: tuple[Any, dict[str, int]] = (None, {})

    def configure_model(self) -> None:
        if self.model is None:
            self.model, self.processor = build_vlm(self.hparams.model_path, self.vlm)
            if self.grpo.beta > 0 and not hasattr(self.model, "disable_adapter"):
                self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    # -------------------------------------------------------------- rollouts
    def score(self, answer: str, solution: str) -> tuple[float, bool]:
        """Reward (weighted sum of the scorers) and the main (first) scorer's verdict."""
        verdicts = [bool(fn(answer, solution)) for fn, _ in self.reward_fns.values()]
        reward = sum(weight * float(v) for v, (_, weight) in zip(verdicts, self.reward_fns.values()))
        return reward, verdicts[0]

    def rollout(self, batch: dict[str, Any], round_: int = 0) -> dict[str, Any]:
        """Sample G answers per prompt and score them (`round_` > 0: a refill round, with its own seeds)."""
        inputs = model_inputs(batch)
        step_seed = self.sampling.seed + 1_000_003 * self.global_step + REFILL_SEED * round_  # never the rank
        generators = [item_generator(step_seed, item_id, self.device) for item_id in batch["ids"]]
        with inference_mode(self.model):
            completions, texts = sample_answers(self.model, self.processor, inputs, self.sampling, generators)
        scored = [self.score(t, sol) for item, sol in zip(texts, batch["solutions"]) for t in item]
        return {
            "texts": texts,
            "completions": completions,
            "rewards": torch.tensor([r for r, _ in scored], dtype=torch.float32, device=self.device),  # [B*G]
            "correct": torch.tensor([c for _, c in scored], dtype=torch.bool, device=self.device),  # [B*G]
        }

    def refill_batch(self, round_: int, size: int, drawn_ids: Collection[str] = ()) -> dict[str, Any]:
        """Fresh prompts for a refill round: seeded random items of the training dataset other than those drawn
        this step, collated by the train dataloader's own collate function (why not Lightning's iterator:
        `lightning_modules/group_filter.py`)."""
        loader = self.trainer.train_dataloader
        dataset = loader.dataset
        if self._positions[0] is not dataset:  # item id -> dataset index, built once per dataset
            self._positions = (dataset, {s.id: i for i, s in enumerate(getattr(dataset, "samples", []))})
        positions = self._positions[1]
        exclude = {positions[i] for i in drawn_ids if i in positions}
        rank, world, seed = self.trainer.global_rank, self.trainer.world_size, self.sampling.seed
        indices = refill_indices(len(dataset), size, seed, self.global_step, round_, rank, world, exclude)
        return move_data_to_device(loader.collate_fn([dataset[i] for i in indices]), self.device)

    def global_max(self, value: int) -> int:
        """The largest `value` over all ranks (every rank must call it)."""
        if self.trainer.world_size == 1:
            return value
        return int(self.all_gather(torch.tensor(value, dtype=torch.long, device=self.device)).max())

    def take(self, batch: dict[str, Any], rollout: dict[str, Any], rows: list[int]) -> tuple[dict, dict]:
        """The prompts `rows` of a batch and their groups of a rollout."""
        return take_rows(batch, rows), take_groups(rollout, rows, self.sampling.k)

    def collect(self, batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float, dict[str, Any]]:
        """This step's rollouts: the batch to train on, its rollout, this rank's loss weight, and every group drawn
        (for the metrics, the rollout log and `last_rollout`).

        Without the filter: the batch as drawn, weight 1. With it: the groups with spread, refilled (`fill_groups`),
        weighted by this rank's share of the kept sequences (tokens for `bnpo` / `dapo`) so that DDP's gradient mean
        is the mean over all kept groups. A rank with none trains on one group at weight 0 (its backward still takes
        part in the gradient all-reduce); when no rank has any, every rank trains on its drawn batch, as plain GRPO.
        """
        k, cfg = self.sampling.k, self.group_filter
        draws: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

        def draw(round_: int) -> torch.Tensor:
            drawn_ids = [i for b, _ in draws.values() for i in b["ids"]]
            prompts = batch if round_ == 0 else self.refill_batch(round_, len(batch["ids"]), drawn_ids)
            draws[round_] = (prompts, self.rollout(prompts, round_))
            return draws[round_][1]["rewards"].view(-1, k)

        pieces: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if cfg.enabled:
            result = fill_groups(draw, len(batch["ids"]), cfg.min_std, cfg.max_resample, self.global_max)
            kept, rounds = result.kept, result.rounds
            for r in sorted(draws):
                rows = [row for rr, row in kept if rr == r]
                if rows:
                    pieces.append(self.take(*draws[r], rows))
        else:
            draw(0)
            kept, rounds = [(0, row) for row in range(len(batch["ids"]))], 0
        token_units = self.grpo.loss_type in ("bnpo", "dapo")
        units = sum(len(c) if token_units else 1 for _, ro in pieces for item in ro["completions"] for c in item)
        drawn = drawn_groups([draws[r] for r in sorted(draws)])
        grouped = drawn["correct"].view(-1, k)
        local = [units, len(kept), grouped.shape[0], int(grouped.all(1).sum()), int((~grouped.any(1)).sum())]
        gathered = self.all_gather(torch.tensor(local, dtype=torch.long, device=self.device)).reshape(-1, len(COUNTS))
        totals = dict(zip(COUNTS, gathered.sum(0).tolist()))
        drawn["counts"], drawn["rounds"] = totals, rounds
        if not cfg.enabled:
            return batch, draws[0][1], 1.0, drawn
        target, world = len(batch["ids"]), gathered.shape[0]
        if totals["kept"] == 0:
            rank_zero_info(
                f"[grpo] step {self.global_step}: no group with reward spread on any rank after {rounds} refill "
                "round(s); training on the drawn batch, as plain GRPO"
            )
            return batch, draws[0][1], 1.0, drawn
        if not kept:
            return *self.take(*draws[0], [0]), 0.0, drawn
        if totals["kept"] < target * world:
            rank_zero_info(
                f"[grpo] step {self.global_step}: {totals['kept']} of {target * world} groups with reward spread after "
                f"{rounds} refill round(s) (max_resample {cfg.max_resample}); training on those"
            )
        pad = {"input_ids": self.processor.tokenizer.pad_token_id, "labels": IGNORE_INDEX}
        merged = concat_prompt_batches([b for b, _ in pieces], pad)
        return merged, concat_groups([ro for _, ro in pieces]), units * world / max(totals["units"], 1), drawn

    def on_train_start(self) -> None:
        """Where the rollout log goes: `<log dir>/<rollout_log>`, or nowhere without a logger (resolved once: the
        trainer's `log_dir` is a collective under DDP)."""
        name = self.hparams.get("rollout_log")
        log_dir = self.trainer.log_dir if name and self.trainer.logger is not None else None
        self.rollout_log_path = Path(log_dir) / name if log_dir else None

    def log_rollouts_to_file(self, drawn: dict[str, Any]) -> None:
        """Append each group's outcome to the rollout log: gathered from every rank, written by rank 0."""
        if self.rollout_log_path is None:
            return
        k = self.sampling.k
        correct = drawn["correct"].view(-1, k).sum(1).tolist()
        rows = [
            rollout_row(item, self.global_step, c, k, solution, images)
            for item, c, solution, images in zip(drawn["ids"], correct, drawn["solutions"], drawn["image_files"])
        ]
        if self.trainer.world_size > 1:
            everyone: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(everyone, rows)
            rows = [row for part in everyone for row in part]
        if self.trainer.is_global_zero:
            append_rollouts(self.rollout_log_path, rows)

    def reference_logprobs(self, batch: dict[str, Any], seqs: dict[str, Any]) -> torch.Tensor | None:
        if self.grpo.beta == 0:
            return None
        if self.ref_model is not None:
            return sequence_logprobs(
                self.ref_model, batch, seqs, self.sampling.temperature, with_grad=False, with_entropy=False
            )[0]
        with self.model.disable_adapter():
            return sequence_logprobs(
                self.model, batch, seqs, self.sampling.temperature, with_grad=False, with_entropy=False
            )[0]

    # ----------------------------------------------------------------- step
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.grpo
        batch, rollout, weight, drawn = self.collect(batch)
        self.last_rollout = {"ids": drawn["ids"], "texts": drawn["texts"], "rewards": drawn["rewards"].tolist()}
        self.log_rollouts_to_file(drawn)
        seqs = build_sequences(model_inputs(batch), rollout["completions"], self.processor.tokenizer.pad_token_id)
        advantages = group_advantages(rollout["rewards"], self.sampling.k, hp.scale_rewards)  # [B*G]
        mask = seqs["completion_mask"]  # [B*G, C]
        ref = self.reference_logprobs(batch, seqs)
        old = None
        if hp.num_iterations > 1:
            old = sequence_logprobs(
                self.model, batch, seqs, self.sampling.temperature, with_grad=False, with_entropy=False
            )[0]
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        for _ in range(hp.num_iterations):
            logp, entropy = sequence_logprobs(self.model, batch, seqs, self.sampling.temperature, with_grad=True)
            loss, stats = grpo_loss(
                logp,
                old,
                advantages,
                mask,
                ref_logp=ref,
                beta=hp.beta,
                eps_low=hp.epsilon_low,
                eps_high=hp.epsilon_high,
                loss_type=hp.loss_type,
                max_completion_length=self.sampling.max_new_tokens,
            )
            self.manual_backward(loss * (weight / hp.grad_accum))
            if hp.num_iterations > 1 or (batch_idx + 1) % hp.grad_accum == 0:
                self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        self.log_rollout(drawn, loss, stats, entropy, mask)
        return loss.detach()

    def log_rollout(self, drawn, loss, stats, entropy, mask) -> None:
        """Reward metrics over every group drawn; loss, length and entropy over the groups trained on."""
        group, rewards = self.sampling.k, drawn["rewards"]
        n = len(drawn["ids"])
        metrics = {
            "train/loss": loss.detach(),
            "train/reward/mean": rewards.mean(),
            "train/reward/std": rewards.std(),
            "train/completion_length": mask.sum(1).float().mean(),
            "train/entropy": (entropy * mask).sum() / mask.sum().clamp(min=1),
        }
        metrics.update({f"train/{k}": v for k, v in zero_std_groups(rewards, group).items()})
        metrics.update({f"train/{k}": v for k, v in stats.items()})
        counts = drawn["counts"]
        metrics.update({f"train/groups_{key}": float(counts[key]) for key in COUNTS[1:]})
        metrics["train/resample_rounds"] = float(drawn["rounds"])
        if any(drawn["tiers"]):  # the data carries a difficulty file: reward and zero-advantage share per tier
            per_item = rewards.view(n, group)
            for tier in ("easy", "medium", "hard"):
                rows = [i for i, t in enumerate(drawn["tiers"]) if t == tier]
                if rows:
                    sub = per_item[rows]
                    metrics[f"train/tier/{tier}/reward"] = sub.mean()
                    metrics[f"train/tier/{tier}/frac_reward_zero_std"] = (
                        (sub.max(1).values == sub.min(1).values).float().mean()
                    )
        self.log_dict(metrics, batch_size=n, prog_bar=False)
        self.log("train/reward", rewards.mean(), prog_bar=True, batch_size=n, logger=False)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        every = self.hparams.log_completions_every
        writer = getattr(self.logger, "experiment", None)
        if every and self.global_step % every == 0 and hasattr(writer, "add_text") and self.trainer.is_global_zero:
            lines = [f"**{drawn['ids'][0]}** gold `{drawn['solutions'][0]}`"]
            lines += [f"- `{t!r}` reward {r:.2f}" for t, r in zip(drawn["texts"][0], rewards[:group].tolist())]
            writer.add_text("train/completions", "\n".join(lines), global_step=self.global_step)

    def set_accumulation(self, steps: int) -> None:
        """Prompt batches per optimizer step (set by `callbacks.global_batch.GlobalBatchSize`)."""
        self.grpo.grad_accum = steps
        checked(self.grpo.problems(), "GRPO")
        self.hparams["grpo"] = asdict(self.grpo)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Nothing per batch: GRPO is evaluated by generation (`callbacks/generative_eval.py`)."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.rng.restore_pending()

    # shared with GRPOModule / SFTModule as functions (lightning_modules/training.py), not through a base class
    configure_optimizers = optimizers_hook
    on_save_checkpoint = save_trainable_hook
    on_load_checkpoint = load_trainable_hook
    setup = check_export_hook
    on_fit_end = export_hook
