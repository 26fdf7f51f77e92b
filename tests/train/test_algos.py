"""Pinned values for mgrd.train.algos on hand-made tensors; the expected numbers are worked out by hand here."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from mgrd.train import algos

TOL = dict(atol=1e-6, rtol=1e-6)  # float32 arithmetic on a handful of numbers of order 1


def close(actual, expected):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32),
                               torch.as_tensor(expected, dtype=torch.float32), **TOL)


# ---------------------------------------------------------------------------------------------- GAE


def test_gae_with_unit_gamma_lambda_and_final_reward_is_reward_minus_value():
    """The report's PPO: A_t = R - V_t, G_t = R at every token; padding stays 0."""
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    values = torch.tensor([[0.2, 0.5, 0.7], [0.1, 0.3, 9.0]])  # 9.0 sits on padding and must not leak
    rewards = algos.final_token_rewards(torch.tensor([1.0, 0.0]), mask)
    close(rewards, [[0, 0, 1.0], [0, 0, 0]])
    adv, ret = algos.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(adv, [[0.8, 0.5, 0.3], [-0.1, -0.3, 0.0]])
    close(ret, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def test_gae_general_gamma_lambda_by_hand():
    """γ = 0.9, λ = 0.5, rewards [0, 0, 1], values [0.5, 0.4, 0.6]:
    δ2 = 1 - 0.6 = 0.4;            A2 = 0.4
    δ1 = 0.9·0.6 - 0.4 = 0.14;     A1 = 0.14 + 0.45·0.4 = 0.32
    δ0 = 0.9·0.4 - 0.5 = -0.14;    A0 = -0.14 + 0.45·0.32 = 0.004;  G = A + V = [0.504, 0.72, 1.0]."""
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # one padding column with a stray value
    adv, ret = algos.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(adv, [[0.004, 0.32, 0.4, 0.0]])
    close(ret, [[0.504, 0.72, 1.0, 0.0]])


def test_final_token_rewards_sit_on_each_rows_last_token():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    close(algos.final_token_rewards(torch.tensor([2.0, 3.0, -1.0]), mask), [[0, 2, 0], [0, 0, 3], [-1, 0, 0]])


# ---------------------------------------------------------------------------------------------- GRPO


REWARDS = [1.0, 0.0, 1.0, 0.0, 0.2, 0.2, 0.7]  # group 0: mixed; group 1: all equal; group 2: one sample
GROUPS = [0, 0, 0, 0, 1, 1, 2]


def test_group_advantages_scaled_by_group_std():
    adv, zero = algos.group_advantages(torch.tensor(REWARDS), torch.tensor(GROUPS), "group")
    std = math.sqrt((4 * 0.5**2) / 3)  # unbiased std of [1, 0, 1, 0] = sqrt(1/3)
    a = 0.5 / (std + algos.STD_EPS)
    close(adv, [a, -a, a, -a, 0, 0, 0])
    assert zero.tolist() == [False] * 4 + [True] * 3  # all-equal group and single-sample group


def test_group_advantages_unscaled_and_batch_scaled():
    adv, _ = algos.group_advantages(torch.tensor(REWARDS), torch.tensor(GROUPS), "none")
    close(adv, [0.5, -0.5, 0.5, -0.5, 0, 0, 0])
    adv, _ = algos.group_advantages(torch.tensor(REWARDS), torch.tensor(GROUPS), "batch")
    batch_std = statistics.stdev(REWARDS)  # ≈ 0.44668, over all seven rewards
    a = 0.5 / (batch_std + algos.STD_EPS)
    close(adv, [a, -a, a, -a, 0, 0, 0])


def test_group_advantages_skip_invalid_rows_and_accept_any_group_ids():
    """A NaN reward marked invalid joins no statistic; group ids need not be 0..B-1."""
    rewards = torch.tensor([1.0, 0.0, 1.0, float("nan"), 3.0, 3.0])
    groups = torch.tensor([7, 7, 7, 7, 2, 2])
    valid = torch.tensor([True, True, True, False, True, True])
    adv, zero = algos.group_advantages(rewards, groups, "group", valid=valid)
    # valid rewards [1, 0, 1]: mean 2/3, unbiased std sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3) + algos.STD_EPS
    close(adv, [(1 / 3) / std, -(2 / 3) / std, (1 / 3) / std, 0, 0, 0])
    assert zero.tolist() == [False, False, False, False, True, True]
    assert torch.isfinite(adv).all()


def test_group_advantages_bad_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reward scale 'std'"):
        algos.group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), "std")


# ---------------------------------------------------------------------------------------------- policy loss

# row 0: log-ratios 0.5, -0.5, 0.1, -0.5 with advantages 1, -1, -2, 1; row 1: one token, ratio 1, advantage 3
LOG_RATIO = torch.tensor([[0.5, -0.5, 0.1, -0.5], [0.0, 0.7, 0.7, 0.7]])
ADV = torch.tensor([[1.0, -1.0, -2.0, 1.0], [3.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])


def per_token_by_hand(high: float = 0.2) -> list[list[float]]:
    r = math.exp
    return [[-(1 + high),            # A=+1, ρ=1.65 > 1+high: clipped term taken
             0.8,                    # A=-1, ρ=0.61 < 0.8: -A·0.8 is larger than -A·ρ, clipped taken
             2 * r(0.1),             # A=-2, ρ=1.105 inside the range: unclipped
             -r(-0.5)],              # A=+1, ρ=0.61: the pessimistic max keeps the unclipped -0.61
            [-3.0]]


def test_policy_loss_token_mean_and_clip_fraction():
    old = torch.full_like(LOG_RATIO, -2.0)
    loss, frac = algos.policy_loss(old + LOG_RATIO, old, ADV, MASK, clip_low=0.2)
    rows = per_token_by_hand()
    close(loss, sum(rows[0] + rows[1]) / 5)
    close(frac, 2 / 5)


def test_policy_loss_asymmetric_clip():
    old = torch.zeros_like(LOG_RATIO)
    loss, frac = algos.policy_loss(LOG_RATIO, old, ADV, MASK, clip_low=0.2, clip_high=0.28)
    rows = per_token_by_hand(high=0.28)
    close(loss, sum(rows[0] + rows[1]) / 5)
    close(frac, 2 / 5)


def test_policy_loss_sequence_aggregations():
    old = torch.zeros_like(LOG_RATIO)
    rows = per_token_by_hand()
    loss, _ = algos.policy_loss(LOG_RATIO, old, ADV, MASK, aggregation="seq-mean-token-sum")
    close(loss, (sum(rows[0]) + sum(rows[1])) / 2)
    loss, _ = algos.policy_loss(LOG_RATIO, old, ADV, MASK, aggregation="seq-mean-token-mean")
    close(loss, (sum(rows[0]) / 4 + sum(rows[1]) / 1) / 2)


def test_aggregation_ignores_empty_rows_and_takes_a_global_denominator():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])  # the middle row was dropped
    close(algos.aggregate(values, mask, "token-mean"), (1 + 2 + 7 + 8 + 9) / 5)
    close(algos.aggregate(values, mask, "seq-mean-token-sum"), (3 + 24) / 2)
    close(algos.aggregate(values, mask, "seq-mean-token-mean"), (1.5 + 8) / 2)
    assert int(algos.aggregation_count(mask, "token-mean")) == 5
    assert int(algos.aggregation_count(mask, "seq-mean-token-mean")) == 2
    # micro-batches summed with the whole step's denominator equal the whole batch
    for mode in algos.AGGREGATIONS:
        whole = algos.aggregate(values, mask, mode)
        total = algos.aggregation_count(mask, mode)
        parts = sum(algos.aggregate(values[i:i + 1], mask[i:i + 1], mode, denominator=total) for i in range(3))
        close(parts, whole)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        algos.aggregate(values, mask, "mean")


def test_policy_gradient_vanishes_on_clipped_tokens_and_padding():
    logp = LOG_RATIO.clone().requires_grad_(True)
    loss, _ = algos.policy_loss(logp, torch.zeros_like(LOG_RATIO), ADV, MASK)
    loss.backward()
    grad = logp.grad
    assert grad[0, 0] == 0 and grad[0, 1] == 0  # clipped
    close(grad[0, 2], 2 * math.exp(0.1) / 5)  # d(-A·ρ)/dlogp = -A·ρ, over 5 tokens
    close(grad[0, 3], -math.exp(-0.5) / 5)
    assert (grad[1, 1:] == 0).all()  # padding


# ---------------------------------------------------------------------------------------------- value loss


def test_value_loss_plain_and_clipped():
    values = torch.tensor([[0.5, 1.5, 1.9]])
    old = torch.tensor([[1.0, 1.0, 1.0]])
    returns = torch.tensor([[1.0, 0.0, 2.0]])
    mask = torch.ones(1, 3)
    loss, frac = algos.value_loss(values, old, returns, mask)
    close(loss, (0.5 * 0.25 + 0.5 * 2.25 + 0.5 * 0.01) / 3)
    assert frac == 0
    # clipped at 0.2: V_clip = [0.8, 1.2, 1.2]; errors [0.04, 1.44, 0.64] against [0.25, 2.25, 0.01]
    loss, frac = algos.value_loss(values, old, returns, mask, clip=0.2)
    close(loss, (0.5 * 0.25 + 0.5 * 2.25 + 0.5 * 0.64) / 3)
    close(frac, 1 / 3)


# ---------------------------------------------------------------------------------------------- KL, entropy


def test_kl_estimators():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    close(algos.kl_penalty(logp, ref, "k1"), [[0.5, -1.0]])
    close(algos.kl_penalty(logp, ref, "k3"), [[math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]])
    close(algos.kl_penalty(logp, logp, "k3"), [[0.0, 0.0]])
    with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
        algos.kl_penalty(logp, ref, "k2")


def test_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e9, -1e9]]])
    expected = [[math.log(4.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]]
    close(algos.entropy_from_logits(logits), expected)


def test_token_logprobs_gathers_the_sampled_ids():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0]]])
    close(algos.token_logprobs(logits, torch.tensor([[1, 1]])), [[math.log(0.75), math.log(0.25)]])


# ---------------------------------------------------------------------------------------------- overlong


def test_overlong_penalty_is_a_linear_ramp_over_the_buffer():
    lengths = torch.tensor([3, 6, 7, 9, 10, 12])
    # max 10, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at 10 and beyond
    close(algos.overlong_penalty(lengths, max_length=10, buffer=4), [0, 0, -0.25, -0.75, -1.0, -1.0])
    close(algos.overlong_penalty(lengths, 10, 4, factor=0.5), [0, 0, -0.125, -0.375, -0.5, -0.5])
    with pytest.raises(ValueError, match="overlong buffer"):
        algos.overlong_penalty(lengths, 10, 0)
