"""GRPOModule: group-relative policy optimisation of a VLM with our own loss (`grpo_loss.py`).

Each training step: G completions per prompt from the shared-prefill sampler (official: G 8, temperature 0.9, top-p
1.0, top-k 50, at most 128 new tokens) -> rewards from `datamodules/scoring.py` (a weighted sum of named scorers) ->
group advantages -> reference log-probs from the same weights with the LoRA adapter disabled (no second model copy;
a frozen copy only when training without LoRA) -> mu >= 1 optimisation passes on the clipped surrogate + beta k3 KL.
Manual optimisation, so mu passes and our own gradient accumulation (`grad_accum`) live in one place.

Logged every step: reward mean/std, the share of groups whose rewards are all equal (the paper's implicit filter)
split into all-correct / all-wrong, per difficulty tier when a difficulty file is given, KL, clip fractions,
completion length, entropy, and a few sample completions as TensorBoard text.

    python train.py fit --config configs/demo/grpo.yaml
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

import torch

from datamodules.collate import model_inputs
from datamodules.scoring import get_scorer
from lightning_modules.grpo_loss import LOSS_TYPES, group_advantages, grpo_loss, zero_std_groups
from lightning_modules.rollout import build_sequences, sequence_logprobs
from lightning_modules.sampling import (
    SamplingConfig,
    banned_token_ids,
    inference_mode,
    item_generator,
    sample,
    stop_token_ids,
)
from lightning_modules.sft import SFTModule
from lightning_modules.vlm import VLMOptions, build_vlm


class GRPOModule(SFTModule):
    """GRPO on prompts from `VLMDataModule(prompt_only=True)`. Reuses SFTModule's optimizer, schedule, checkpoints.

    Args:
        model_path: starting checkpoint (the cold-started model); linked to data.model_path.
        vlm: builder options (official: LoRA r 32, alpha 64, dropout 0.05).
        num_generations: G, completions per prompt (official 8).
        max_new_tokens: official 128.
        temperature: official 0.9.
        top_p: official 1.0.
        top_k: official 50.
        beta: KL weight (official 0.04; 0 skips the reference pass).
        epsilon_low: lower clip range (0.2).
        epsilon_high: upper clip range (0.2).
        loss_type: `grpo`, `bnpo`, `dapo` or `dr_grpo`.
        scale_rewards: divide advantages by the group std (off = Dr. GRPO).
        num_iterations: mu, optimisation passes per generation batch.
        grad_accum: prompt batches per optimizer step (Lightning's accumulate_grad_batches does not apply to manual
            optimisation).
        max_grad_norm: gradient clipping (ms-swift default 1.0).
        rewards: scorer name -> weight (`exact`, `iou`, `math`, `choice`).
        log_completions_every: log sample completions as TensorBoard text every N steps (0 = never).
        seed: base seed for the per-prompt sampling RNGs (combined with the step).
        lr, weight_decay, adam_betas, warmup_ratio, min_lr_ratio, export_dir, vision_lr_scale: as in SFTModule.
    """

    def __init__(self, model_path: str, vlm: VLMOptions | None = None, num_generations: int = 8,
                 max_new_tokens: int = 128, temperature: float = 0.9, top_p: float = 1.0, top_k: int = 50,
                 beta: float = 0.04, epsilon_low: float = 0.2, epsilon_high: float = 0.2, loss_type: str = "grpo",
                 scale_rewards: bool = True, num_iterations: int = 1, grad_accum: int = 1, max_grad_norm: float = 1.0,
                 rewards: dict[str, float] | None = None,
                 log_completions_every: int = 10, seed: int = 42, lr: float = 1e-5, weight_decay: float = 0.1,
                 adam_betas: tuple[float, float] = (0.9, 0.95), warmup_ratio: float = 0.1,
                 min_lr_ratio: float = 0.0, export_dir: str | None = None,
                 vision_lr_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__(
            model_path, vlm, lr, weight_decay, adam_betas, warmup_ratio, min_lr_ratio, export_dir, vision_lr_scale
        )
        self.save_hyperparameters(ignore=["vlm"])
        self.hparams["vlm"] = asdict(self.vlm)
        problems = []
        if loss_type not in LOSS_TYPES:
            problems.append(f"loss_type {loss_type!r} not in {LOSS_TYPES}")
        if num_generations < 2:
            problems.append("num_generations must be >= 2 (advantages are relative to the group)")
        if num_iterations > 1 and grad_accum > 1:
            problems.append("num_iterations > 1 needs grad_accum 1 (each pass is one optimizer step)")
        if problems:
            raise ValueError("invalid GRPO settings: " + "; ".join(problems))
        self.reward_fns = {name: (get_scorer(name), weight) for name, weight in (rewards or {"exact": 1.0}).items()}
        self.tiers: dict[str, str] = {}
        self.cfg = SamplingConfig(k=num_generations, max_new_tokens=max_new_tokens, do_sample=True,
                                  temperature=temperature, top_p=top_p, top_k=top_k)  # fmt: skip
        self.automatic_optimization = False
        self.ref_model = None

    def setup(self, stage: str) -> None:
        """Per-tier logging uses the data's difficulty file (`data.difficulty_file`), when one is set."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        path = getattr(getattr(dm, "hparams", None), "difficulty_file", None)
        if path and not self.tiers:
            from datamodules.tiers import read_difficulty

            self.tiers = {i: row.tier for i, row in read_difficulty(path).items()}

    def configure_model(self) -> None:
        if self.model is None:
            self.model, self.processor = build_vlm(self.hparams.model_path, self.vlm)
            if self.hparams.beta > 0 and not hasattr(self.model, "disable_adapter"):
                self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    # -------------------------------------------------------------- rollouts
    def reward(self, answer: str, solution: str) -> float:
        return sum(weight * float(bool(fn(answer, solution))) for fn, weight in self.reward_fns.values())

    def rollout(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Sample G answers per prompt and score them."""
        inputs = model_inputs(batch)
        step_seed = self.hparams.seed + 1_000_003 * self.global_step + self.global_rank
        generators = [item_generator(step_seed, item_id) for item_id in batch["ids"]]
        with inference_mode(self.model):
            completions = sample(self.model, inputs, self.cfg, stop_token_ids(self.processor, self.model),
                                 banned_token_ids(self.processor), generators)  # fmt: skip
        tok = self.processor.tokenizer
        texts = [[tok.decode(c, skip_special_tokens=True) for c in item] for item in completions]
        rewards = torch.tensor([self.reward(t, sol) for item, sol in zip(texts, batch["solutions"]) for t in item],
                               dtype=torch.float32, device=self.device)  # fmt: skip  # [B*G]
        seqs = build_sequences(inputs, completions, tok.pad_token_id)
        return {"texts": texts, "rewards": rewards, "seqs": seqs}

    def reference_logprobs(self, batch: dict[str, Any], seqs: dict[str, Any]) -> torch.Tensor | None:
        if self.hparams.beta == 0:
            return None
        if self.ref_model is not None:
            return sequence_logprobs(
                self.ref_model, batch, seqs, self.cfg.temperature, with_grad=False, with_entropy=False
            )[0]
        with self.model.disable_adapter():
            return sequence_logprobs(
                self.model, batch, seqs, self.cfg.temperature, with_grad=False, with_entropy=False
            )[0]

    # ----------------------------------------------------------------- step
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp, group = self.hparams, self.hparams.num_generations
        rollout = self.rollout(batch)
        seqs, rewards = rollout["seqs"], rollout["rewards"]
        advantages = group_advantages(rewards, group, hp.scale_rewards)  # [B*G]
        mask = seqs["completion_mask"]  # [B*G, C]
        ref = self.reference_logprobs(batch, seqs)
        old = None
        if hp.num_iterations > 1:
            old = sequence_logprobs(self.model, batch, seqs, self.cfg.temperature, with_grad=False, with_entropy=False)[
                0
            ]
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        for _ in range(hp.num_iterations):
            logp, entropy = sequence_logprobs(self.model, batch, seqs, self.cfg.temperature, with_grad=True)
            loss, stats = grpo_loss(logp, old, advantages, mask, ref_logp=ref, beta=hp.beta, eps_low=hp.epsilon_low,
                                    eps_high=hp.epsilon_high, loss_type=hp.loss_type,
                                    max_completion_length=self.cfg.max_new_tokens)  # fmt: skip
            self.manual_backward(loss / hp.grad_accum)
            if hp.num_iterations > 1 or (batch_idx + 1) % hp.grad_accum == 0:
                self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        self.log_rollout(batch, rollout, loss, stats, entropy, mask)
        return loss.detach()

    def log_rollout(self, batch, rollout, loss, stats, entropy, mask) -> None:
        group, rewards = self.hparams.num_generations, rollout["rewards"]
        n = len(batch["ids"])
        metrics = {"train/loss": loss.detach(), "train/reward/mean": rewards.mean(), "train/reward/std": rewards.std(),
                   "train/completion_length": mask.sum(1).float().mean(),
                   "train/entropy": (entropy * mask).sum() / mask.sum().clamp(min=1)}  # fmt: skip
        metrics.update({f"train/{k}": v for k, v in zero_std_groups(rewards, group).items()})
        metrics.update({f"train/{k}": v for k, v in stats.items()})
        if self.tiers:
            per_item = rewards.view(n, group)
            for tier in ("easy", "medium", "hard"):
                rows = [i for i, item_id in enumerate(batch["ids"]) if self.tiers.get(item_id) == tier]
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
            lines = [f"**{batch['ids'][0]}** gold `{batch['solutions'][0]}`"]
            lines += [f"- `{t!r}` reward {r:.2f}" for t, r in zip(rollout["texts"][0], rewards[:group].tolist())]
            writer.add_text("train/completions", "\n".join(lines), global_step=self.global_step)

    def on_before_optimizer_step(self, optimizer) -> None:  # manual optimisation logs its own statistics
        pass
