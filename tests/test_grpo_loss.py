"""Hand-computed tests of `lightning_modules.grpo_loss`, plus a comparison with TRL's GRPO loss.

Run: ``pytest tests/test_grpo_loss.py -q``. The TRL comparison is skipped when trl (a dev extra) is not installed.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lightning_modules.grpo_loss import LOSS_TYPES, group_advantages, grpo_loss, k3_kl, zero_std_groups

# ---------------------------------------------------------------------------------------------------------------------
# group advantages
# ---------------------------------------------------------------------------------------------------------------------


def test_group_advantages_scaled_uses_unbiased_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, deviations +-0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.577350
    #          A = +-0.5 / (0.577350 + 1e-4) = +-0.865876
    # group 2: all 1 -> deviations 0 -> A = 0 / (0 + 1e-4) = 0
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    expected = torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, group_size=4), expected)


def test_group_advantages_unscaled_is_mean_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # Dr. GRPO: A = r - mean; group 1 mean 0.5 -> +-0.5, group 2 mean 1 -> 0
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, group_size=4, scale_rewards=False), expected)


def test_group_advantages_zero_variance_groups_are_exactly_zero():
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.7, 0.7, 0.7])
    assert torch.equal(group_advantages(rewards, group_size=3), torch.zeros(6))


def test_group_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages(torch.zeros(6), group_size=4)


def test_zero_std_groups_splits_easy_and_hard():
    # groups: [1,1,1] all correct | [0,0,0] all wrong | [1,0,1] mixed | [.5,.5,.5] equal but neither
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5])
    stats = zero_std_groups(rewards, group_size=3)
    assert stats["frac_reward_zero_std"].item() == pytest.approx(3 / 4)
    assert stats["frac_reward_all_correct"].item() == pytest.approx(1 / 4)
    assert stats["frac_reward_all_wrong"].item() == pytest.approx(1 / 4)
    # with max_reward 0.5 the last group counts as all correct and the first does not
    assert zero_std_groups(rewards, 3, max_reward=0.5)["frac_reward_all_correct"].item() == pytest.approx(1 / 4)


# ---------------------------------------------------------------------------------------------------------------------
# the 2x3 example shared by the aggregation tests
# ---------------------------------------------------------------------------------------------------------------------
# old_logp = 0, logp = log(ratio), eps = 0.2 both sides, beta = 0; the last token of row 1 is padding.
#   row 0, A = +1, ratio [1.0, 1.5, 0.5]: min(r, clip(r)) = [1.0, min(1.5, 1.2), min(0.5, 0.8)] = [1.0, 1.2, 0.5]
#                                          loss = [-1.0, -1.2, -0.5], sum -2.7 over 3 tokens
#   row 1, A = -1, ratio [1.5, 0.5, pad]:  min(-r, -clip(r)) = [min(-1.5, -1.2), min(-0.5, -0.8)] = [-1.5, -0.8]
#                                          loss = [1.5, 0.8], sum 2.3 over 2 tokens
# Clipped tokens: row 0 token 1 (ratio > 1.2, A > 0: high), row 1 token 1 (ratio < 0.8, A < 0: low).


def _two_by_three():
    ratio = torch.tensor([[1.0, 1.5, 0.5], [1.5, 0.5, 1.0]])
    logp = ratio.log().requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, (-2.7 / 3 + 2.3 / 2) / 2),  # row means -0.9 and 1.15 -> mean 0.125
        ("bnpo", {}, (-2.7 + 2.3) / 5),  # -0.4 over 5 real tokens = -0.08
        ("dapo", {}, (-2.7 + 2.3) / 5),  # same as bnpo with the batch's own token count
        ("dapo", {"num_items_in_batch": torch.tensor(10.0)}, (-2.7 + 2.3) / 10),  # -0.04, e.g. a 2-step window
        ("dr_grpo", {}, (-2.7 + 2.3) / (2 * 3)),  # N * T = 6 -> -0.0667
        ("dr_grpo", {"max_completion_length": 4}, (-2.7 + 2.3) / (2 * 4)),  # N * L = 8 -> -0.05
    ],
    ids=["grpo", "bnpo", "dapo", "dapo-num_items", "dr_grpo", "dr_grpo-max_len"],
)
def test_aggregation_on_hand_example(loss_type, kwargs, expected):
    logp, old_logp, adv, mask = _two_by_three()
    loss, stats = grpo_loss(logp, old_logp, adv, mask, beta=0.0, loss_type=loss_type, **kwargs)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_ratio/high"].item() == pytest.approx(1 / 5)  # row 0 token 1
    assert stats["clip_ratio/low"].item() == pytest.approx(1 / 5)  # row 1 token 1
    assert stats["clip_ratio/region"].item() == pytest.approx(2 / 5)
    assert stats["ratio/mean"].item() == pytest.approx((1.0 + 1.5 + 0.5 + 1.5 + 0.5) / 5)  # = 1.0; pad ignored
    assert stats["advantage/mean"].item() == pytest.approx(0.0)
    assert stats["advantage/std"].item() == pytest.approx(1.0)  # population std of [1, -1]
    assert "kl" not in stats


def test_grpo_gradient_on_hand_example():
    logp, old_logp, adv, mask = _two_by_three()
    loss, _ = grpo_loss(logp, old_logp, adv, mask, beta=0.0, loss_type="grpo")
    loss.backward()
    # unclipped token: loss = -A * r, d/dlogp = -A * r; clipped token: constant, gradient 0.
    # scaled by 1 / (tokens in row) / (2 rows):
    #   row 0: [-1 * 1.0 / 3 / 2, 0, -1 * 0.5 / 3 / 2] = [-1/6, 0, -1/12]
    #   row 1: [+1 * 1.5 / 2 / 2, 0, pad 0]             = [0.375, 0, 0]
    expected = torch.tensor([[-1 / 6, 0.0, -1 / 12], [0.375, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected)


def test_on_policy_old_logp_none_is_logp_detached():
    logp, _, adv, mask = _two_by_three()
    loss, stats = grpo_loss(logp, None, adv, mask, beta=0.0)
    loss.backward()
    # mu = 1: ratio = 1 everywhere, nothing clipped; per-token loss -A, gradient -A * 1 / len / N
    #   value: row 0 mean -1, row 1 mean +1 -> 0;  grad row 0: -1/3/2 = -1/6, row 1: +1/2/2 = 0.25
    assert loss.item() == pytest.approx(0.0)
    assert stats["clip_ratio/region"].item() == 0.0
    assert stats["ratio/mean"].item() == pytest.approx(1.0)
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 6, -1 / 6, -1 / 6], [0.25, 0.25, 0.0]]))


# ---------------------------------------------------------------------------------------------------------------------
# clipping, zero-variance groups, padding, KL
# ---------------------------------------------------------------------------------------------------------------------


def test_clipping_engages_on_both_sides():
    # row 0: ratio e,   A = +1 -> min(e, 1.2)        = 1.2  clipped high, loss -1.2, gradient 0
    # row 1: ratio 1/e, A = -1 -> min(-1/e, -0.8)    = -0.8 clipped low,  loss  0.8, gradient 0
    # row 2: ratio e,   A = -1 -> min(-e, -1.2)      = -e   not clipped,  loss  e,   gradient e (/ 3 rows)
    logp = torch.tensor([[1.0], [-1.0], [1.0]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, -1.0])
    loss, stats = grpo_loss(logp, torch.zeros(3, 1), adv, torch.ones(3, 1), beta=0.0)
    loss.backward()
    assert loss.item() == pytest.approx((-1.2 + 0.8 + math.e) / 3)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0], [0.0], [math.e / 3]]))
    assert stats["clip_ratio/high"].item() == pytest.approx(1 / 3)
    assert stats["clip_ratio/low"].item() == pytest.approx(1 / 3)
    assert stats["clip_ratio/region"].item() == pytest.approx(2 / 3)
    assert stats["ratio/mean"].item() == pytest.approx((2 * math.e + 1 / math.e) / 3)


def test_asymmetric_clip_range():
    # eps_high 0.28 (DAPO clip-higher): ratio e with A = +1 clips at 1.28 instead of 1.2
    logp = torch.tensor([[1.0]], requires_grad=True)
    loss, _ = grpo_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), beta=0.0, eps_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_zero_variance_groups_give_zero_policy_gradient(loss_type):
    torch.manual_seed(0)
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), group_size=4)  # all 0
    logp = (-torch.rand(8, 5)).requires_grad_()
    old_logp = logp.detach() + 0.3 * torch.randn(8, 5)  # off-policy ratios, some beyond the clip range
    mask = (torch.arange(5) < torch.randint(1, 6, (8, 1))).long()
    loss, _ = grpo_loss(logp, old_logp, adv, mask, beta=0.0, loss_type=loss_type)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(8, 5))
    assert loss.item() == 0.0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_padded_tokens_have_no_effect(loss_type):
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    pad = mask == 0
    clean = -torch.rand(3, 4)
    old_logp, ref_logp = clean + 0.3 * torch.randn(3, 4), clean + 0.2 * torch.randn(3, 4)
    adv = torch.tensor([0.5, -1.0, 2.0])

    def run(garbage):
        logp = clean.masked_fill(pad, garbage[0]).requires_grad_()
        out = grpo_loss(
            logp,
            old_logp.masked_fill(pad, garbage[1]),
            adv,
            mask,
            ref_logp=ref_logp.masked_fill(pad, garbage[2]),
            loss_type=loss_type,
        )
        out[0].backward()
        return out, logp.grad

    (loss_a, stats_a), grad_a = run((0.0, 0.0, 0.0))
    (loss_b, stats_b), grad_b = run((float("nan"), float("inf"), float("-inf")))
    (loss_c, _), grad_c = run((float("inf"), float("nan"), 1e30))
    assert torch.isfinite(loss_b) and torch.isfinite(grad_b).all()
    assert torch.equal(loss_a, loss_b) and torch.equal(loss_a, loss_c)
    assert torch.equal(grad_a, grad_b) and torch.equal(grad_a, grad_c)
    assert torch.equal(grad_a[pad], torch.zeros(int(pad.sum())))
    for key in stats_a:
        assert torch.equal(stats_a[key], stats_b[key]), key


def test_k3_kl_hand_values():
    # delta = ref - logp;  k3 = exp(delta) - delta - 1
    #   delta = ln 2:  2 - ln 2 - 1     = 1 - ln 2      = 0.306853
    #   delta = -ln 2: 0.5 + ln 2 - 1   = ln 2 - 0.5    = 0.193147
    #   delta = 0:     1 - 0 - 1        = 0
    ref = torch.tensor([[math.log(2), -math.log(2), 0.0]])
    torch.testing.assert_close(k3_kl(torch.zeros(1, 3), ref), torch.tensor([[1 - math.log(2), math.log(2) - 0.5, 0.0]]))


def test_kl_term_value_and_beta_zero_drops_it_exactly():
    # A = 0 so the policy term is 0; k3 = [1 - ln 2, ln 2 - 0.5], masked mean = 0.5 / 2 = 0.25 (padding ignored)
    # loss = beta * 0.25 = 0.04 * 0.25 = 0.01
    logp = torch.zeros(1, 3, requires_grad=True)
    ref = torch.tensor([[math.log(2), -math.log(2), 5.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = grpo_loss(logp, None, torch.zeros(1), mask, ref_logp=ref, beta=0.04)
    assert loss.item() == pytest.approx(0.01)
    assert stats["kl"].item() == pytest.approx(0.25)
    # beta = 0 with the same reference: the loss is bit-identical to the loss without one; KL still reported
    adv = torch.tensor([0.7])
    loss_0, stats_0 = grpo_loss(logp, None, adv, mask, ref_logp=ref, beta=0.0)
    loss_none, stats_none = grpo_loss(logp, None, adv, mask, beta=0.0)
    assert torch.equal(loss_0, loss_none)
    assert stats_0["kl"].item() == pytest.approx(0.25) and "kl" not in stats_none


def test_invalid_arguments_are_refused():
    logp, old_logp, adv, mask = _two_by_three()
    with pytest.raises(ValueError, match="valid names: grpo, bnpo, dapo, dr_grpo"):
        grpo_loss(logp, old_logp, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(logp, old_logp, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match="only used by loss_type='dapo'"):
        grpo_loss(logp, old_logp, adv, mask, beta=0.0, loss_type="bnpo", num_items_in_batch=10)


# ---------------------------------------------------------------------------------------------------------------------
# comparison with TRL (test-only dependency)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trl_grpo():
    return pytest.importorskip("trl.trainer.grpo_trainer")


def _random_batch(seed=0, n=6, t=5):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=g) * 3  # [N, T]
    old_logp = logp + 0.4 * torch.randn(n, t, generator=g)  # [N, T] ratios on both sides of the clip range
    ref_logp = logp + 0.3 * torch.randn(n, t, generator=g)  # [N, T]
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])  # [N]
    mask = (torch.arange(t) < lengths[:, None]).long()  # [N, T]
    adv = torch.randn(n, generator=g)  # [N]
    return logp, old_logp, ref_logp, mask, adv


def _trl_compute_loss(trl_grpo, logp, old_logp, ref_logp, mask, adv, loss_type, beta, max_completion_length):
    """Run TRL's `GRPOTrainer._compute_loss` on a bare instance carrying only the attributes it reads.

    The model forward is replaced by returning ``logp``; gather/reduce are identities (one process); gradient
    accumulation steps and steps per generation are 1, so TRL's extra normalisers are 1 and ``dapo`` divides by
    ``num_items_in_batch`` = the batch's masked-token count.
    """
    trainer = object.__new__(trl_grpo.GRPOTrainer)
    trainer.args = SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1)
    trainer.loss_type, trainer.beta = loss_type, beta
    trainer.epsilon_low = trainer.epsilon_high = 0.2
    trainer.max_completion_length = max_completion_length
    trainer.importance_sampling_level = "token"
    trainer.top_entropy_quantile = 1.0
    trainer.off_policy_mask_threshold = None
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = False
    trainer._entropy_bonus_enabled = trainer.aux_loss_enabled = False
    trainer.current_gradient_accumulation_steps = 1
    trainer.model = SimpleNamespace(training=True)
    trainer.accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, torch.zeros_like(logp), None)
    n, t = logp.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old_logp,
        "ref_per_token_logps": ref_logp,
        "num_items_in_batch": mask.sum(),
    }
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_matches_trl(trl_grpo, loss_type, beta):
    logp, old_logp, ref_logp, mask, adv = _random_batch()
    ours_logp, trl_logp = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    ours, stats = grpo_loss(
        ours_logp,
        old_logp,
        adv,
        mask,
        ref_logp=ref_logp if beta else None,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=8,
    )
    theirs, metrics = _trl_compute_loss(trl_grpo, trl_logp, old_logp, ref_logp, mask, adv, loss_type, beta, 8)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad)
    assert stats["clip_ratio/low"].item() > 0 and stats["clip_ratio/high"].item() > 0  # both sides exercised
    for ours_key, trl_key in [("low", "low_mean"), ("high", "high_mean"), ("region", "region_mean")]:
        assert stats[f"clip_ratio/{ours_key}"].item() == pytest.approx(metrics[f"clip_ratio/{trl_key}"][0])
    if beta:
        assert stats["kl"].item() == pytest.approx(metrics["kl"][0])


@pytest.mark.parametrize("scale_rewards", [True, False])
def test_advantages_match_trl(trl_grpo, scale_rewards):
    # TRL computes advantages inline in `_generate_and_score_completions` (after generation and reward calls), so the
    # method cannot be called in isolation; this repeats its four lines (scale_rewards "group" / "none") with TRL's
    # own `nanstd`, which is what fixes the unbiased std.
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    g = torch.Generator().manual_seed(1)
    rewards = torch.cat([torch.randint(0, 2, (16,), generator=g).float(), torch.ones(4), torch.rand(8, generator=g)])
    num_generations = 4
    mean = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    std = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    expected = rewards - mean
    if scale_rewards:
        expected = expected / (std + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, num_generations, scale_rewards=scale_rewards), expected)
