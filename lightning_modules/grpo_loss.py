"""GRPO maths as pure tensor functions: group advantages, clipped surrogate, k3 KL and loss aggregation.

No model, tokenizer or trainer in here; `GRPOModule` (``grpo.py``) calls these.
Tests: ``pytest tests/test_grpo_loss.py``.

Objective (DeepSeekMath GRPO, https://arxiv.org/abs/2402.03300, in the form TRL and ms-swift implement)::

    A_i     = (r_i - mean(r_group)) / (std(r_group) + eps)         # unbiased std (torch.std); skipped if not scaled
    rho_i,t = exp(logp_i,t - old_logp_i,t)
    l_i,t   = -min(rho_i,t * A_i, clip(rho_i,t, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL3_i,t
    KL3_i,t = exp(ref_i,t - logp_i,t) - (ref_i,t - logp_i,t) - 1   # k3 estimator of KL(pi || pi_ref), always >= 0

Aggregation, chosen by ``loss_type`` (M = completion mask, N sequences, T completion tokens):

- ``grpo``:    mean_i [ sum_t M l / sum_t M ]              sequence mean, then batch mean (paper / ms-swift default)
- ``bnpo``:    sum M l / sum M                             token-level mean over this batch
- ``dapo``:    sum M l / num_items_in_batch                token-level mean; see below for the normaliser
- ``dr_grpo``: sum M l / (N * max_completion_length)      constant normaliser (Dr. GRPO, arXiv 2503.20783)

Settings of the paper's GRPO runs (official `examples/train/grpo_lora.sh` on ms-swift 3.6, github.com/byyx666/DC-SFT): ``loss_type="grpo"``, eps 0.2 both sides, beta 0.04 (0.001 for the
reasoning task), ``scale_rewards`` on with eps 1e-4, ``num_iterations`` (mu) 1. Deviations and notes:

- Advantages use the *unbiased* group std (Bessel-corrected ``torch.std``, as TRL's ``nanstd`` and ms-swift do), so
  a two-answer group [1, 0] gets A = +-0.707, not +-1. ``scale_rewards=False`` gives Dr. GRPO's mean-only advantage.
  Groups whose rewards are all equal get A = 0 exactly and so carry no policy gradient: the paper's implicit
  difficulty filter, measured by `zero_std_groups`. sigma-scaling up-weights near-uniform groups (a question-level
  difficulty bias), which matters when comparing against a difficulty-aware sampler.
- With mu = 1 the policy that sampled is the policy being updated, so ``old_logp == logp.detach()``: the ratio is 1
  in value, clipping never engages, and only its gradient (A * grad logp) remains. Callers pass ``old_logp=None``.
- ``dapo``: TRL divides every micro-batch by the masked-token count of the whole generation batch over all ranks
  (divided by world size), which yields a true global token mean under gradient accumulation. By default we divide
  by the token count of the batch passed in (then ``dapo`` equals ``bnpo``). For TRL's behaviour under Lightning,
  which divides the loss by ``accumulate_grad_batches`` (A) and averages gradients over P ranks, pass
  ``num_items_in_batch = total masked tokens of the accumulation window on all ranks / (P * A)``.
- TRL divides ``grpo``/``bnpo``/``dr_grpo`` by the accumulation steps itself; we leave that to Lightning.
- The KL term is added only when ``beta > 0``; with ``beta == 0`` no reference log-probs are needed (if given, the
  KL is still reported as a statistic).
- Padded tokens (mask 0) are replaced with zeros via ``torch.where`` before any arithmetic, so garbage, inf or NaN
  there never reaches the loss or the gradient.
"""

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def group_advantages(rewards: Tensor, group_size: int, scale_rewards: bool = True, eps: float = 1e-4) -> Tensor:
    """Group-normalised advantages.

    Args:
        rewards: Rewards, shape ``[B*G]``, the G completions of each prompt contiguous (prompt-major order).
        group_size: G, completions per prompt.
        scale_rewards: Divide by the group's unbiased std + ``eps`` (GRPO); if False only subtract the mean (Dr. GRPO).
        eps: Added to the std before dividing (TRL and ms-swift use 1e-4).

    Returns:
        Advantages, shape ``[B*G]``, dtype of ``rewards``. Groups with identical rewards give exactly 0.

    Raises:
        ValueError: If ``rewards.numel()`` is not a multiple of ``group_size``.
    """
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards has {rewards.numel()} elements, not a multiple of group_size={group_size}")
    grouped = rewards.reshape(-1, group_size)  # [B, G]
    advantages = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale_rewards:
        # unbiased std as TRL's nanstd; a group of one has no spread (TRL uses 0 there too)
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped)  # [B, 1] or [B, G]
        advantages = advantages / (std + eps)  # [B, G]
    return advantages.reshape(-1)  # [B*G]


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 (non-negative).

    Args:
        logp: Current policy log-probs of the sampled tokens, shape ``[N, T]``.
        ref_logp: Reference policy log-probs of the same tokens, shape ``[N, T]``.

    Returns:
        Per-token KL estimate, shape ``[N, T]``.
    """
    delta = ref_logp - logp  # [N, T]
    return torch.exp(delta) - delta - 1  # [N, T]


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    ref_logp: Tensor | None = None,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate with optional k3 KL penalty, aggregated as ``loss_type`` says (see module docstring).

    Args:
        logp: Current policy log-probs of the completion tokens, shape ``[N, T]``, with grad.
        old_logp: Log-probs under the sampling policy, shape ``[N, T]``; None means ``logp.detach()`` (mu = 1).
        advantages: One advantage per completion, shape ``[N]``.
        mask: Completion mask, shape ``[N, T]``, 1 (or True) on real tokens, 0 on padding.
        ref_logp: Reference policy log-probs, shape ``[N, T]``; required when ``beta > 0``.
        beta: KL coefficient; 0 drops the KL term exactly.
        eps_low: Lower clip range, ratio clipped at ``1 - eps_low``.
        eps_high: Upper clip range, ratio clipped at ``1 + eps_high``.
        loss_type: One of ``grpo``, ``bnpo``, ``dapo``, ``dr_grpo``.
        max_completion_length: ``dr_grpo`` normaliser per sequence; defaults to T.
        num_items_in_batch: ``dapo`` only: token count to divide by; defaults to this batch's masked-token count.

    Returns:
        The scalar loss and detached statistics: ``kl`` (when ``ref_logp`` is given), ``clip_ratio/low``,
        ``clip_ratio/high``, ``clip_ratio/region``, ``ratio/mean`` (masked token means), ``advantage/mean`` and
        ``advantage/std`` (population std over the N completions).

    Raises:
        ValueError: On an unknown ``loss_type``, ``beta > 0`` without ``ref_logp``, or ``num_items_in_batch``
            given for a loss type other than ``dapo``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid names: {', '.join(LOSS_TYPES)}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (reference log-probs); set beta=0 to train without KL")
    if num_items_in_batch is not None and loss_type != "dapo":
        raise ValueError(f"num_items_in_batch is only used by loss_type='dapo', got loss_type={loss_type!r}")
    mask = mask.bool()  # [N, T]
    maskf = mask.float()  # [N, T]
    n_tokens = maskf.sum().clamp(min=1.0)  # []
    # sanitise padding before any arithmetic: where() routes zero gradient to padded logp, even if it is inf/NaN
    logp = torch.where(mask, logp.float(), 0.0)  # [N, T]
    old_logp = logp.detach() if old_logp is None else torch.where(mask, old_logp.float(), 0.0)  # [N, T]
    adv = advantages.float().reshape(-1, 1)  # [N, 1]

    ratio = torch.exp(logp - old_logp)  # [N, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # [N, T]
    per_token_loss = -torch.min(ratio * adv, clipped * adv)  # [N, T]
    stats: dict[str, Tensor] = {}
    if ref_logp is not None:
        kl = k3_kl(logp, torch.where(mask, ref_logp.float(), 0.0))  # [N, T]
        if beta > 0:
            per_token_loss = per_token_loss + beta * kl  # [N, T]
        stats["kl"] = (kl * maskf).sum().detach() / n_tokens  # []
    per_token_loss = torch.where(mask, per_token_loss, 0.0)  # [N, T]

    if loss_type == "grpo":
        seq_loss = per_token_loss.sum(dim=1) / maskf.sum(dim=1).clamp(min=1.0)  # [N]
        loss = seq_loss.mean()  # []
    elif loss_type == "bnpo":
        loss = per_token_loss.sum() / n_tokens  # []
    elif loss_type == "dapo":
        given = num_items_in_batch is not None  # bool
        normaliser = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=logp.device) if given else n_tokens
        loss = per_token_loss.sum() / normaliser.clamp(min=1.0)  # []
    else:  # dr_grpo
        length = logp.shape[1] if max_completion_length is None else max_completion_length  # int
        loss = per_token_loss.sum() / (logp.shape[0] * length)  # []

    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0) & mask  # [N, T]
        high = (ratio > 1 + eps_high) & (adv > 0) & mask  # [N, T]
        stats["clip_ratio/low"] = low.sum() / n_tokens  # []
        stats["clip_ratio/high"] = high.sum() / n_tokens  # []
        stats["clip_ratio/region"] = (low | high).sum() / n_tokens  # []
        stats["ratio/mean"] = (ratio * maskf).sum() / n_tokens  # []
        stats["advantage/mean"] = adv.mean()  # []
        stats["advantage/std"] = adv.std(correction=0)  # []
    return loss, stats


def zero_std_groups(rewards: Tensor, group_size: int, max_reward: float = 1.0) -> dict[str, Tensor]:
    """Share of groups whose rewards are all equal, hence zero advantage: the paper's implicit difficulty filter.

    Args:
        rewards: Rewards, shape ``[B*G]``, prompt-major as in `group_advantages`.
        group_size: G, completions per prompt.
        max_reward: Reward of a fully correct answer.

    Returns:
        ``frac_reward_zero_std`` (all rewards equal), ``frac_reward_all_correct`` (all equal ``max_reward``: easy)
        and ``frac_reward_all_wrong`` (all 0: hard), each a scalar share of the B groups.

    Raises:
        ValueError: If ``rewards.numel()`` is not a multiple of ``group_size``.
    """
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards has {rewards.numel()} elements, not a multiple of group_size={group_size}")
    grouped = rewards.detach().reshape(-1, group_size)  # [B, G]
    return {
        "frac_reward_zero_std": (grouped.amax(dim=1) == grouped.amin(dim=1)).float().mean(),  # []
        "frac_reward_all_correct": (grouped == max_reward).all(dim=1).float().mean(),  # []
        "frac_reward_all_wrong": (grouped == 0).all(dim=1).float().mean(),  # []
    }
