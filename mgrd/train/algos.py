"""The RL maths as pure tensor functions: advantages, losses, their aggregation, KL, entropy, length penalty.

Every function here is tensor in, tensor out, with shapes in its docstring; nothing reads a file, a model or
a process group. `mgrd.train.rl` composes them into PPO (Step-Audio-R1 §4.3: a value model, GAE with
γ = λ = 1, reward at the final token, clip 0.2, no KL) and GRPO (group-normalised advantages, optional KL to a
frozen reference), with the knobs of later work (asymmetric clip, token- or sequence-level aggregation,
reward scaling by group / batch / none, dropping zero-variance groups, an overlong penalty).

Shapes: `R` rows (B prompts × K samples, prompt-major, as in `mgrd.rollout.RolloutBatch`), `T` response
positions (right-padded; `mask` is 1 on real response tokens), `V` vocabulary.
"""

from __future__ import annotations

from typing import Literal

import torch

Aggregation = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]
AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
RewardScale = Literal["group", "batch", "none"]
REWARD_SCALES = ("group", "batch", "none")
KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS = ("k1", "k3")
STD_EPS = 1e-6  # added to a standard deviation before dividing by it


# ---------------------------------------------------------------------------------------------- aggregation


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: Aggregation = "token-mean",
              denominator: float | torch.Tensor | None = None) -> torch.Tensor:
    """Reduce per-token values to one scalar loss.

    - "token-mean": `Σ_rt v·m / Σ_rt m`: every token weighs the same (DAPO), so long responses weigh more;
    - "seq-mean-token-sum": `Σ_r (Σ_t v·m) / #rows`: each row's sum, averaged over rows (Dr. GRPO's unbiased
      form, up to its constant);
    - "seq-mean-token-mean": `Σ_r (Σ_t v·m / Σ_t m) / #rows`: each row's mean, averaged over rows (the GRPO paper).

    Rows whose mask is all 0 (dropped rows) count in no denominator.

    Args:
        values: `[R, T]` per-token values (e.g. a clipped surrogate).
        mask: `[R, T]` 1 on the tokens that count.
        mode: one of `AGGREGATIONS`.
        denominator: the tokens ("token-mean") or rows (the seq modes) to divide by, instead of this batch's own
            count: with gradient accumulation over micro-batches, pass the count over the whole optimiser step so
            the summed micro-batch losses equal the loss of the full batch.
    Returns:
        A scalar tensor.
    Raises:
        ValueError: an unknown mode.
    """
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        total, count = (values * mask).sum(), mask.sum()
    elif mode in ("seq-mean-token-sum", "seq-mean-token-mean"):
        per_row = (values * mask).sum(-1)
        tokens = mask.sum(-1)
        if mode == "seq-mean-token-mean":
            per_row = per_row / tokens.clamp(min=1)
        total, count = per_row.sum(), (tokens > 0).sum().to(values.dtype)
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {list(AGGREGATIONS)}")
    count = count if denominator is None else torch.as_tensor(denominator, dtype=values.dtype, device=values.device)
    return total / count.clamp(min=1)


def aggregation_count(mask: torch.Tensor, mode: Aggregation) -> torch.Tensor:
    """What `aggregate` divides by for this `[R, T]` mask: its tokens ("token-mean") or non-empty rows (seq modes).

    Summed over micro-batches (and ranks), it is the `denominator` of the whole optimiser step.
    """
    if mode == "token-mean":
        return mask.sum()
    if mode in ("seq-mean-token-sum", "seq-mean-token-mean"):
        return (mask.sum(-1) > 0).sum()
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {list(AGGREGATIONS)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`Σ v·m / Σ m` over all entries (0 when the mask is empty); for metrics."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------- advantages


def final_token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each row's scalar reward on its last real response token (the report's reward placement).

    Args:
        scores: `[R]` one reward per response.
        mask: `[R, T]` right-padded response mask; every row needs at least one token.
    Returns:
        `[R, T]` zeros except `scores[r]` at position `mask[r].sum() - 1`.
    """
    last = (mask.sum(-1) - 1).clamp(min=0).long()
    out = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    return out.scatter(1, last[:, None], scores[:, None])


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses.

    `δ_t = r_t + γ·V_{t+1} − V_t` (V past a row's last token is 0), `A_t = δ_t + γλ·A_{t+1}`, returns
    `G_t = A_t + V_t`. With γ = λ = 1 and the reward R on the final token only (the report's PPO), the sum
    telescopes: `A_t = R − V_t` and `G_t = R` at every token.

    Args:
        rewards: `[R, T]` per-token rewards (`final_token_rewards`).
        values: `[R, T]` the value model's estimate at each response position (the state before token t).
        mask: `[R, T]` 1 on real response tokens (right padding).
        gamma: discount; lam: GAE λ.
    Returns:
        `(advantages, returns)`, both `[R, T]`, 0 on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # 0 past each row's end
    deltas = (rewards + gamma * next_values - values) * mask
    if gamma * lam == 1.0:  # the report's setting: A_t is the sum of the deltas from t on, one reverse cumsum
        advantages = deltas.flip(1).cumsum(1).flip(1) * mask
    else:
        advantages = torch.zeros_like(values)
        running = torch.zeros_like(values[:, 0])
        for t in reversed(range(rewards.shape[1])):
            running = deltas[:, t] + gamma * lam * running * mask[:, t]  # padding carries nothing back
            advantages[:, t] = running
    return advantages, (advantages + values) * mask


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, scale: RewardScale = "group",
                     valid: torch.Tensor | None = None, eps: float = STD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages: each reward minus its group's mean, optionally divided by a standard deviation.

    - "group": `(r − mean_g) / (std_g + eps)` (the GRPO paper);
    - "batch": `(r − mean_g) / (std_batch + eps)`, the std of all valid rewards in the batch (a group of
      near-equal rewards is not blown up);
    - "none": `r − mean_g` (Dr. GRPO).

    Standard deviations are unbiased (Bessel, as `torch.std`). A group of one valid row, or whose valid rewards
    are all equal, is a zero-variance group: it carries no learning signal under any scale, its advantages are
    0 and its rows are flagged, so the trainer can drop them from the loss (DAPO's dynamic sampling).

    Args:
        rewards: `[R]` one scalar reward per response.
        group_ids: `[R]` long, the prompt of each row (`RolloutBatch.group_ids`; ids need not be contiguous).
        scale: one of `REWARD_SCALES`.
        valid: `[R]` bool, False for rows whose reward was skipped (they join no statistic and get 0).
        eps: added to the std before dividing.
    Returns:
        `(advantages [R], zero_variance [R] bool)`.
    Raises:
        ValueError: an unknown scale, or rewards and group ids of different lengths.
    """
    if scale not in REWARD_SCALES:
        raise ValueError(f"unknown reward scale {scale!r}; choose one of {list(REWARD_SCALES)}")
    if rewards.shape != group_ids.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} differ in shape")
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).double()
    _, group = torch.unique(group_ids, return_inverse=True)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    w = valid.double()
    count = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, group, w)
    mean = torch.zeros_like(count).index_add_(0, group, r * w) / count.clamp(min=1)
    centred = (r - mean[group]) * w
    sq = torch.zeros_like(count).index_add_(0, group, centred**2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    spread_max = torch.full_like(count, -torch.inf).scatter_reduce(0, group, torch.where(valid, r, -torch.inf), "amax")
    spread_min = torch.full_like(count, torch.inf).scatter_reduce(0, group, torch.where(valid, r, torch.inf), "amin")
    zero_var_group = (count < 2) | (spread_max == spread_min)
    if scale == "group":
        adv = centred / (std[group] + eps)
    elif scale == "batch":
        batch_std = r[valid].std() if int(valid.sum()) > 1 else r.new_tensor(0.0)
        adv = centred / (batch_std + eps)
    else:
        adv = centred
    zero_var = zero_var_group[group] & valid
    adv = torch.where(zero_var | ~valid, torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype), zero_var


# ---------------------------------------------------------------------------------------------- losses


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float | None = None, aggregation: Aggregation = "token-mean",
                denominator: float | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with an asymmetric clip range (DAPO's clip-higher when `clip_high > clip_low`).

    Per token: `ρ = exp(logp − old_logp)`, `ℓ = max(−A·ρ, −A·clip(ρ, 1 − clip_low, 1 + clip_high))`.

    Args:
        logprobs: `[R, T]` log-probs of the sampled tokens under the policy being trained (with grad).
        old_logprobs: `[R, T]` log-probs under the policy that sampled them (no grad).
        advantages: `[R, T]` per-token advantages (a GRPO row's scalar broadcast over its tokens).
        mask: `[R, T]` 1 on the tokens that count.
        clip_low, clip_high: the ratio's range is `[1 − clip_low, 1 + clip_high]`; `clip_high` None = `clip_low`.
        aggregation, denominator: as in `aggregate`.
    Returns:
        `(loss, clip_fraction)`: the aggregated scalar loss, and the share of counted tokens where the clipped
        term was the one taken (its gradient is zero there).
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    clip_fraction = masked_mean((clipped > unclipped).to(per_token.dtype), mask)
    return aggregate(per_token, mask, aggregation, denominator), clip_fraction.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = None, aggregation: Aggregation = "token-mean",
               denominator: float | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The value model's squared error `½(V − G)²`, optionally clipped around the rollout's values (PPO2).

    With `clip`, `V_clip = old_V + clip(V − old_V, −clip, clip)` and the loss is `½·max((V − G)², (V_clip − G)²)`.

    Args:
        values: `[R, T]` current value estimates (with grad).
        old_values: `[R, T]` the estimates at rollout time (no grad).
        returns: `[R, T]` targets `G_t` (`gae`).
        mask: `[R, T]` 1 on response tokens.
        clip: the clip range, or None for the plain squared error.
        aggregation, denominator: as in `aggregate`.
    Returns:
        `(loss, clip_fraction)`; the fraction is 0 without `clip`.
    """
    err = (values - returns) ** 2
    if clip is None:
        return aggregate(0.5 * err, mask, aggregation, denominator), values.new_tensor(0.0)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    err_clipped = (clipped_values - returns) ** 2
    fraction = masked_mean((err_clipped > err).to(err.dtype), mask)
    return aggregate(0.5 * torch.maximum(err, err_clipped), mask, aggregation, denominator), fraction.detach()


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from the sampled tokens' log-probs (Schulman's estimators).

    - "k1": `log π − log π_ref` (unbiased, can be negative);
    - "k3": `exp(log π_ref − log π) − (log π_ref − log π) − 1` (unbiased, never negative; GRPO's choice).

    Args:
        logprobs: `[R, T]` under the policy; ref_logprobs: `[R, T]` under the frozen reference.
    Returns:
        `[R, T]` per-token estimates (aggregate them with a mask).
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {list(KL_ESTIMATORS)}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of `[..., V]` logits, `logsumexp(z) − Σ softmax(z)·z`, in float32: `[...]`."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (logits.softmax(-1) * logits).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`[R, T]` float32 `log_softmax` of `[R, T, V]` logits at `[R, T]` token ids (a trainer's forward)."""
    from mgrd.generate import token_logprobs as one_step  # the one log-prob gather, shared with sampling

    rows, steps, vocab = logits.shape
    return one_step(logits.reshape(rows * steps, vocab), tokens.reshape(-1)).view(rows, steps)


# ---------------------------------------------------------------------------------------------- shaping


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to the reward of long responses.

    0 up to `max_length − buffer` tokens, then falling linearly to `−factor` at `max_length`, and `−factor`
    beyond it: `−factor · (len − (max_length − buffer)) / buffer` inside the buffer.

    Args:
        lengths: `[R]` response lengths in tokens.
        max_length: the generation budget (`max_new_tokens`); buffer: the length of the linear ramp (> 0).
        factor: the penalty at `max_length`.
    Returns:
        `[R]` float32 penalties in `[−factor, 0]`.
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length={max_length}], got {buffer}")
    over = (lengths.float() - (max_length - buffer)).clamp(min=0, max=buffer)
    return -factor * over / buffer
