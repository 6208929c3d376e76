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
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch

from datamodules.collate import model_inputs
from datamodules.errors import checked
from datamodules.scoring import get_scorer
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
        rewards: scorer name -> weight (`exact`, `iou`, `math`, `choice`).
        log_completions_every: log sample completions as TensorBoard text every N steps (0 = never).
        export_dir: save the merged model + processor at fit end.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vlm", "sampling", "grpo", "optim"])
        # copies: the defaults in the signature are shared instances
        self.vlm, self.sampling, self.grpo, self.optim = (
            copy.deepcopy(vlm),
            copy.deepcopy(sampling),
            copy.deepcopy(grpo),
            copy.deepcopy(optim),
        )
        problems = vlm_problems(self.vlm) + self.sampling.problems() + self.grpo.problems() + self.optim.problems()
        if self.sampling.k < 2:
            problems.append("sampling.k (the group size G) must be >= 2: advantages are relative to the group")
        if not self.sampling.do_sample:
            problems.append("sampling.do_sample must be true: a greedy group has identical answers")
        checked(problems, "GRPO")
        self.hparams.update(
            vlm=asdict(self.vlm), sampling=asdict(self.sampling), grpo=asdict(self.grpo), optim=asdict(self.optim)
        )
        self.reward_fns = {name: (get_scorer(name), weight) for name, weight in (rewards or {"exact": 1.0}).items()}
        self.automatic_optimization = False
        self.model = None
        self.processor = None
        self.ref_model = None
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.rng = RNGResume()
        self.last_rollout: dict[str, Any] = {}

    def configure_model(self) -> None:
        if self.model is None:
            self.model, self.processor = build_vlm(self.hparams.model_path, self.vlm)
            if self.grpo.beta > 0 and not hasattr(self.model, "disable_adapter"):
                self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    # -------------------------------------------------------------- rollouts
    def reward(self, answer: str, solution: str) -> float:
        return sum(weight * float(bool(fn(answer, solution))) for fn, weight in self.reward_fns.values())

    def rollout(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Sample G answers per prompt and score them."""
        inputs = model_inputs(batch)
        step_seed = self.sampling.seed + 1_000_003 * self.global_step  # never the rank: same rollouts on any world size
        generators = [item_generator(step_seed, item_id, self.device) for item_id in batch["ids"]]
        with inference_mode(self.model):
            completions, texts = sample_answers(self.model, self.processor, inputs, self.sampling, generators)
        tok = self.processor.tokenizer
        rewards = torch.tensor(
            [self.reward(t, sol) for item, sol in zip(texts, batch["solutions"]) for t in item],
            dtype=torch.float32,
            device=self.device,
        )  # [B*G]
        seqs = build_sequences(inputs, completions, tok.pad_token_id)
        return {"texts": texts, "rewards": rewards, "seqs": seqs}

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
        hp, group = self.grpo, self.sampling.k
        rollout = self.rollout(batch)
        self.last_rollout = {
            "ids": list(batch["ids"]),
            "texts": rollout["texts"],
            "rewards": rollout["rewards"].tolist(),
        }
        seqs, rewards = rollout["seqs"], rollout["rewards"]
        advantages = group_advantages(rewards, group, hp.scale_rewards)  # [B*G]
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
            self.manual_backward(loss / hp.grad_accum)
            if hp.num_iterations > 1 or (batch_idx + 1) % hp.grad_accum == 0:
                self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        self.log_rollout(batch, rollout, loss, stats, entropy, mask)
        return loss.detach()

    def log_rollout(self, batch, rollout, loss, stats, entropy, mask) -> None:
        group, rewards = self.sampling.k, rollout["rewards"]
        n = len(batch["ids"])
        metrics = {
            "train/loss": loss.detach(),
            "train/reward/mean": rewards.mean(),
            "train/reward/std": rewards.std(),
            "train/completion_length": mask.sum(1).float().mean(),
            "train/entropy": (entropy * mask).sum() / mask.sum().clamp(min=1),
        }
        metrics.update({f"train/{k}": v for k, v in zero_std_groups(rewards, group).items()})
        metrics.update({f"train/{k}": v for k, v in stats.items()})
        if batch.get("tiers"):  # the data carries a difficulty file: reward and zero-advantage share per tier
            per_item = rewards.view(n, group)
            for tier in ("easy", "medium", "hard"):
                rows = [i for i, t in enumerate(batch["tiers"]) if t == tier]
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
