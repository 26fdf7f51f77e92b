"""`mgrd rl`: reinforcement learning with verifiable rewards — PPO as in the report, or GRPO.

One RL step is five named sub-steps, each a module-level function that can be swapped without copying the loop:

    rollout_step    K samples per prompt through the shared rollout path (`mgrd.rollout`, audio encoded once)
    score_step      rewards from the registry (`mgrd.train.rewards`), the overlong penalty, the step's metrics
    logprob_step    what the update compares against: old log-probs, the reference's, the value model's
    advantage_step  GRPO group-normalised advantages, or PPO's GAE on the value model's estimates
    update_step     clipped policy loss (+ KL, entropy), value loss; micro-batches, clipping, optimiser steps

PPO (Step-Audio-R1 §4.3): reward on the final token, GAE with γ = λ = 1, clip 0.2, no KL. Its value model is a
**separate copy of the policy** (encoder, adapter and LLM) whose `lm_head` is replaced by a zero-initialised
`hidden -> 1` head, so `critic(...).logits[..., 0]` are the values and the critic is driven through `forward` like
the policy; a copy rather than a head on the policy keeps the value loss out of the policy's weights (the report's
"value model"; verl's and OpenRLHF's layout) at the price of a second model in memory. Both train in one AdamW
(the critic's parameters in their own group, at `algo.critic_lr`); the critic is saved in checkpoints, not in
`final/`. GRPO: group-normalised advantages over the K samples of each prompt, the clipped ratio, and an optional
k1/k3 KL to a frozen copy of the starting policy. The maths lives in `mgrd.train.algos`.

`max_steps` counts RL steps; each runs `algo.update_epochs × algo.minibatches` optimiser steps on its rollouts,
and the learning-rate schedule advances once per RL step. With one optimiser step per rollout (the default) the
"old" log-probs are the current ones detached, so the ratio is exactly 1 and no extra forward runs; otherwise they
are recomputed before the first update (`algo.old_logprobs`). Prompts of each step are split over the ranks
(`mgrd.train.distributed.shard`), every group stays on one rank, losses are normalised by global counts and
metrics reduced. Rollouts go through the `mgrd.rollout.Rollout` protocol (the in-process `TorchRollout` today).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgrd.generate import SamplingConfig
from mgrd.rollout import RolloutBatch, TorchRollout
from mgrd.train import algos
from mgrd.train.config import ModelSetup, OptimConfig, RunConfig, describe, option
from mgrd.train.rewards import RewardConfig, RewardError, score

ALGORITHMS = ("ppo", "grpo")
OLD_LOGPROBS = ("auto", "recompute", "rollout")


# ---------------------------------------------------------------------------------------------- config


@dataclass
class AlgoConfig:
    """The RL algorithm and its knobs (defaults: the report's PPO)."""

    name: str = option("ppo", "ppo (value model + GAE, the report) or grpo (group-normalised advantages)")
    prompts_per_step: int = option(8, "prompts per RL step, global (a multiple of the number of processes)")
    samples_per_prompt: int = option(16, "K rollouts per prompt (report: 16)")
    rollout_prompts_per_gpu: int = option(0, "prompts sampled together per GPU (performance only: bounds the KV "
                                             "cache of one generate call); 0 = all of the rank's prompts at once")
    rollout_rows_per_gpu: int = option(0, "rows (prompt x sample) decoded at once on the fast path, with "
                                          "continuous refill: a row that ended frees its slot for the next "
                                          "(performance only); 0 = every row of a generate call at once")
    update_epochs: int = option(1, "passes over each step's rollouts")
    minibatches: int = option(1, "optimiser steps per pass (the rollouts split into this many minibatches)")
    clip_low: float = option(0.2, "ratio clip below: 1 - clip_low (report: 0.2)")
    clip_high: float | None = option(None, "ratio clip above: 1 + clip_high; null = clip_low (DAPO: 0.28)")
    aggregation: str = option("token-mean", "loss aggregation: token-mean, seq-mean-token-sum or seq-mean-token-mean")
    reward_scale: str = option("group", "GRPO: divide centred rewards by the group std, the batch std, or none")
    drop_zero_variance: bool = option(False, "leave groups whose rewards are all equal out of the loss (DAPO)")
    kl_coef: float = option(0.0, "weight of the KL to the frozen starting policy (report: 0; 0 builds no reference)")
    kl_estimator: str = option("k3", "KL estimator: k1 or k3")
    entropy_coef: float = option(0.0, "weight of an entropy bonus (0: off)")
    gamma: float = option(1.0, "PPO discount (report: 1.0)")
    lam: float = option(1.0, "PPO GAE lambda (report: 1.0)")
    value_clip: float | None = option(None, "PPO: clip the value around its rollout estimate (null: off)")
    critic_lr: float = option(1e-5, "PPO: the value model's peak learning rate")
    old_logprobs: str = option("auto", "auto (detached current when one optimiser step per rollout, else "
                                       "recompute), recompute (a forward before the update), or rollout (the "
                                       "engine's own log-probs)")
    overlong_buffer: int = option(0, "soft overlong penalty over the last N tokens before max_new_tokens (0: off)")
    overlong_factor: float = option(1.0, "the overlong penalty at max_new_tokens")

    def __post_init__(self):
        if self.name not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.name!r}; choose one of {', '.join(ALGORITHMS)}")
        checks = {"aggregation": algos.AGGREGATIONS, "reward_scale": algos.REWARD_SCALES,
                  "kl_estimator": algos.KL_ESTIMATORS, "old_logprobs": OLD_LOGPROBS}
        for key, choices in checks.items():
            if getattr(self, key) not in choices:
                raise ValueError(f"algo.{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        for key in ("rollout_prompts_per_gpu", "rollout_rows_per_gpu"):
            if getattr(self, key) < 0:
                raise ValueError(f"algo.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("prompts_per_step", "samples_per_prompt", "update_epochs", "minibatches"):
            if getattr(self, key) < 1:
                raise ValueError(f"algo.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("clip_low", "kl_coef", "entropy_coef", "overlong_buffer", "critic_lr"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"algo.{key} must be >= 0, got {getattr(self, key)}")

    @property
    def optimiser_steps_per_rollout(self) -> int:
        return self.update_epochs * self.minibatches


@dataclass
class DataConfig:
    """The prompts: manifests, or a synthetic suite written into the run folder."""

    manifests: tuple[str, ...] = option((), "training manifests (JSONL); their items are the RL prompts")
    synth_families: tuple[str, ...] = option((), "when no manifest is given: synthetic families to write into "
                                                 "<run>/data/ first (see `mgrd data synth --list`)")
    synth_n: int = option(64, "items of the synthetic suite")
    synth_seed: int = option(0, "seed of the synthetic suite")
    eval_manifests: tuple[str, ...] = option((), "held-out manifests scored by greedy decoding at the start, every "
                                                 "run.eval_every steps and at the end (eval/ rows)")
    eval_max_items: int = option(0, "score only the first N held-out items (0: all)")


@dataclass
class RLConfig:
    """`mgrd rl`: every setting of an RL run."""

    run: RunConfig = option(RunConfig(name="rl"), "run folder, length, logging, checkpoints")
    model: ModelSetup = option(ModelSetup(), "the policy to start from and what of it trains")
    optim: OptimConfig = option(OptimConfig(lr=1e-6, micro_batch_size=8), "the policy's optimiser "
                                "(micro_batch_size: rows per forward; grad_accum is unused by RL)")
    algo: AlgoConfig = option(AlgoConfig(), "algorithm and knobs")
    reward: RewardConfig = option(RewardConfig(), "reward functions and weights")
    sampling: SamplingConfig = option(SamplingConfig(max_new_tokens=512), "rollout sampling (report: up to "
                                      "10,240 tokens); keep temperature 1 and no filters (the trainer scores the raw "
                                      "policy); its seed, when null, is the run seed (+ step, + rank)")
    data: DataConfig = option(DataConfig(), "the prompts")

    def __post_init__(self):
        s = self.sampling
        if (s.temperature, s.top_k, s.top_p, s.repetition_penalty) != (1.0, 0, 1.0, 1.0):
            warnings.warn("RL samples with temperature/top-k/top-p/repetition penalty changed, but the trainer scores "
                          "the raw (temperature 1) policy: the updates are off-policy", stacklevel=2)
        if self.optim.grad_accum != 1:
            raise ValueError("optim.grad_accum is not used by RL: each step's rollouts set the accumulation "
                             "(algo.minibatches optimiser steps, optim.micro_batch_size rows per forward)")


# ---------------------------------------------------------------------------------------------- batches


@dataclass
class Rollouts:
    """One step's samples: the batch, the items it came from, and each row's number of audio chunks."""

    batch: RolloutBatch
    items: list
    chunks_per_row: torch.Tensor  # [R] long


@dataclass
class Scored:
    """The rewards of a step's rows: `rewards [R]` (0 where skipped), `valid [R]` bool, and metrics."""

    rewards: torch.Tensor
    valid: torch.Tensor
    metrics: dict[str, float]


@dataclass
class OldValues:
    """What the update compares against, all `[R, T]` or None: the old policy's log-probs (None: the current
    ones detached), the reference's log-probs (only with a KL term), the value model's estimates (PPO)."""

    logprobs: torch.Tensor | None
    ref_logprobs: torch.Tensor | None
    values: torch.Tensor | None


@dataclass
class Advantages:
    """`advantages [R, T]`, PPO's `returns [R, T]` (None for GRPO), the loss `mask [R, T]`, and metrics."""

    advantages: torch.Tensor
    returns: torch.Tensor | None
    mask: torch.Tensor
    metrics: dict[str, float]


def take_rows(rollouts: Rollouts, rows: torch.Tensor) -> tuple[RolloutBatch, int]:
    """A sub-batch of rows, trimmed of columns that are padding in all of them (less compute).

    Args:
        rollouts: the step's rollouts. rows: `[r]` long row indices.
    Returns:
        (sub-batch, T'): slice every `[R, T]` tensor of the step as `[rows, :T']` to match it.
    """
    b = rollouts.batch
    prompt_mask, response_mask = b.prompt_mask[rows], b.response_mask[rows]
    start = int(prompt_mask.any(0).long().argmax())  # first column that is real in some row (left padding)
    steps = max(int(response_mask.sum(-1).max()), 1)
    mels = mel_lens = None
    if b.mels is not None:
        first = rollouts.chunks_per_row.cumsum(0) - rollouts.chunks_per_row
        chunks = [c for r in rows.tolist() for c in range(int(first[r]), int(first[r] + rollouts.chunks_per_row[r]))]
        if chunks:
            index = torch.tensor(chunks, dtype=torch.long, device=b.mels.device)
            mels, mel_lens = b.mels[index], b.mel_lens[index]
    sub = RolloutBatch(
        prompt_ids=b.prompt_ids[rows, start:], prompt_mask=prompt_mask[:, start:],
        response_ids=b.response_ids[rows, :steps], response_mask=response_mask[:, :steps],
        logprobs=b.logprobs[rows, :steps], policy_logprobs=b.policy_logprobs[rows, :steps],
        group_ids=b.group_ids[rows], finish_reasons=[b.finish_reasons[r] for r in rows.tolist()],
        texts=[b.texts[r] for r in rows.tolist()], mels=mels, mel_lens=mel_lens)
    return sub, steps


def response_logits(model, batch: RolloutBatch) -> torch.Tensor:
    """`[r, T, V]` logits predicting each response token, from one teacher-forced forward (with grad if enabled).

    The same call as `mgrd.rollout.response_logprobs`: position P − 1 + t predicts response token t.
    """
    steps = batch.response_ids.shape[1]
    out = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens,
                position_ids=batch.position_ids, logits_to_keep=steps + 1)
    return out.logits[:, :-1]


def micro_batches(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` split into consecutive chunks of at most `size`."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


# ---------------------------------------------------------------------------------------------- the trainer


@dataclass
class Trainer:
    """Everything a step touches. `policy` / `critic` may be DDP- or FSDP2-wrapped; `engine` samples."""

    cfg: RLConfig
    policy: nn.Module
    tokenizer: Any
    engine: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    critic: nn.Module | None = None
    reference: nn.Module | None = None
    dist: Any = None
    nan_skips: int = 0
    reward_skips: int = 0
    unused: list = field(default_factory=list)  # distributed.UnusedParams of policy and critic

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def autocast(self):
        enabled = self.cfg.model.autocast_bf16 and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


def make_critic(policy: nn.Module) -> nn.Module:
    """The PPO value model: a copy of the (unwrapped) policy with `lm_head` replaced by a zero `hidden -> 1` head.

    Zero weights and bias make every first value 0, so the first advantages are the rewards themselves.
    """
    critic = copy.deepcopy(policy)
    hidden = critic.lm_head.in_features
    head = nn.Linear(hidden, 1, bias=True, device=critic.lm_head.weight.device, dtype=critic.lm_head.weight.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    critic.lm_head = head
    return critic


def make_reference(policy: nn.Module) -> nn.Module:
    """A frozen copy of the (unwrapped) starting policy, for the KL term."""
    reference = copy.deepcopy(policy).eval()
    reference.requires_grad_(False)
    return reference


# ---------------------------------------------------------------------------------------------- sub-steps


def rollout_step(tr: Trainer, items: list, step: int, sampling: SamplingConfig | None = None,
                 k: int | None = None) -> Rollouts:
    """Sample K completions for each of this rank's prompts through the `Rollout` engine.

    Prompts are built by each item's task (`Task.encode_prompt`, clip features computed once per item). The
    sampling seed is fixed by (run seed, step, rank), so a resumed run draws the same samples. `sampling` and
    `k` default to the config's (evaluation passes greedy decoding and 1).
    """
    from mgrd.tasks import get_task
    from mgrd.tasks.base import clip_features
    from mgrd.train.distributed import rank_seed

    audio_config = _unwrap(tr.policy).config.audio
    prompts = [get_task(item.task).encode_prompt(item, tr.tokenizer, audio_config,
                                                 features=clip_features(item, audio_config)) for item in items]
    sampling = sampling or tr.cfg.sampling
    base = sampling.seed if sampling.seed is not None else tr.cfg.run.seed
    sampling = replace(sampling, seed=rank_seed(base * 1_000_000 + step, tr.dist))
    k, size = k or tr.cfg.algo.samples_per_prompt, tr.cfg.algo.rollout_prompts_per_gpu or len(prompts)
    tr.policy.eval()
    parts = []
    for i in range(0, len(prompts), size):  # every rank has as many prompts, so as many generate calls
        with tr.autocast():
            parts.append(tr.engine.generate(prompts[i:i + size], replace(sampling, seed=sampling.seed + i),
                                            num_samples=k))
    chunks = torch.tensor([len(p.mels) for p in prompts], dtype=torch.long).repeat_interleave(k)
    return Rollouts(batch=concat_batches(parts, _pad_id(tr)), items=list(items), chunks_per_row=chunks)


def concat_batches(parts: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Several engines' batches as one: prompts re-padded on the left, responses on the right, group ids offset."""
    if len(parts) == 1:
        return parts[0]
    prompt_width = max(p.prompt_ids.shape[1] for p in parts)
    steps = max(p.response_ids.shape[1] for p in parts)

    def pad(t, width, value, left):
        extra = width - t.shape[1]
        return torch.nn.functional.pad(t, (extra, 0) if left else (0, extra), value=value)

    offsets, total = [], 0
    for p in parts:
        offsets.append(total)
        total += p.num_prompts
    cat = lambda ts: torch.cat(ts, dim=0) if ts[0] is not None else None  # noqa: E731
    return RolloutBatch(
        prompt_ids=cat([pad(p.prompt_ids, prompt_width, pad_id, True) for p in parts]),
        prompt_mask=cat([pad(p.prompt_mask, prompt_width, 0, True) for p in parts]),
        response_ids=cat([pad(p.response_ids, steps, pad_id, False) for p in parts]),
        response_mask=cat([pad(p.response_mask, steps, 0, False) for p in parts]),
        logprobs=cat([pad(p.logprobs, steps, 0.0, False) for p in parts]),
        policy_logprobs=cat([pad(p.policy_logprobs, steps, 0.0, False) for p in parts]),
        group_ids=cat([p.group_ids + o for p, o in zip(parts, offsets)]),
        finish_reasons=[f for p in parts for f in p.finish_reasons], texts=[t for p in parts for t in p.texts],
        mels=_cat_mels(parts), mel_lens=cat([p.mel_lens for p in parts if p.mel_lens is not None] or [None]))


def _cat_mels(parts: list[RolloutBatch]) -> torch.Tensor | None:
    """The parts' `[N_i, n_mels, L_i]` chunks in one `[N, n_mels, max L]` tensor (right-padded with zeros)."""
    mels = [p.mels for p in parts if p.mels is not None]
    if not mels:
        return None
    frames = max(m.shape[-1] for m in mels)
    return torch.cat([torch.nn.functional.pad(m, (0, frames - m.shape[-1])) for m in mels], dim=0)


def _pad_id(tr: Trainer) -> int:
    ids = _unwrap(tr.policy).config.special_ids
    return ids.pad if ids is not None and ids.pad is not None else 0


def score_step(tr: Trainer, rollouts: Rollouts) -> Scored:
    """Rewards of every row (+ the overlong penalty) and the step's outcome metrics.

    Raises:
        RewardError: a reward function failed, or more than `reward.max_skip_fraction` of the rows got a NaN or
            infinite reward.
    """
    from mgrd.chat import split_reasoning
    from mgrd.tasks.grading import as_row
    from mgrd.train.rewards import correct_reward

    b, cfg = rollouts.batch, tr.cfg
    rows = [as_row(rollouts.items[int(g)]) for g in b.group_ids.tolist()]
    columns = {key: [row.get(key) for row in rows] for key in rows[0]}
    scores = score(b.texts, columns, cfg.reward)
    if scores.skipped > cfg.reward.max_skip_fraction * b.num_rows:
        raise RewardError(f"{scores.skipped} of {b.num_rows} rollouts got a NaN or infinite reward, more than "
                          f"reward.max_skip_fraction={cfg.reward.max_skip_fraction}")
    valid = torch.tensor(scores.valid, dtype=torch.bool)
    rewards = torch.tensor([t if ok else 0.0 for t, ok in zip(scores.total, scores.valid)], dtype=torch.float32)
    lengths = b.response_lengths.cpu()
    if cfg.algo.overlong_buffer:
        rewards = rewards + algos.overlong_penalty(lengths, cfg.sampling.max_new_tokens, cfg.algo.overlong_buffer,
                                                   cfg.algo.overlong_factor) * valid
    think = [len(tr.tokenizer.encode(split_reasoning(t)[0], add_special_tokens=False)) for t in b.texts]
    correct = correct_reward(b.texts, **columns)
    metrics = {"reward": float(rewards[valid].mean()) if valid.any() else float("nan"),
               "accuracy": sum(correct) / len(correct),
               "think_len_mean": sum(think) / len(think), "think_len_max": float(max(think)),
               "response_len_mean": float(lengths.float().mean()),
               "truncation_rate": sum(f == "length" for f in b.finish_reasons) / b.num_rows,
               "reward_skipped": float(scores.skipped)}
    metrics.update(scores.means())
    return Scored(rewards=rewards.to(b.response_ids.device), valid=valid.to(b.response_ids.device), metrics=metrics)


@torch.no_grad()
def logprob_step(tr: Trainer, rollouts: Rollouts) -> OldValues:
    """Old log-probs (when the update needs them), the reference's log-probs (KL), the values (PPO); `[R, T]`."""
    algo, b = tr.cfg.algo, rollouts.batch
    need_old = algo.old_logprobs == "recompute" or (algo.old_logprobs == "auto"
                                                    and algo.optimiser_steps_per_rollout > 1)
    models = {"logprobs": tr.policy if need_old else None,
              "ref_logprobs": tr.reference if algo.kl_coef > 0 else None,
              "values": tr.critic if algo.name == "ppo" else None}
    out = {name: None if m is None else torch.zeros(b.response_ids.shape, device=b.response_ids.device)
           for name, m in models.items()}
    for model in (m for m in models.values() if m is not None):
        model.eval()
    rows = torch.arange(b.num_rows, device=b.response_ids.device)
    for mb in micro_batches(rows, tr.cfg.optim.micro_batch_size):
        sub, steps = take_rows(rollouts, mb)
        for name, model in models.items():
            if model is None:
                continue
            with tr.autocast():
                logits = response_logits(model, sub)
            value = logits[..., 0].float() if name == "values" else algos.token_logprobs(logits, sub.response_ids)
            out[name][mb, :steps] = value * sub.response_mask
    old = b.policy_logprobs if algo.old_logprobs == "rollout" else out["logprobs"]
    return OldValues(logprobs=old, ref_logprobs=out["ref_logprobs"], values=out["values"])


def advantage_step(tr: Trainer, rollouts: Rollouts, scored: Scored, old: OldValues) -> Advantages:
    """GRPO: group-normalised advantages broadcast over each row's tokens. PPO: GAE on the values, with the
    reward on the final token. Rows with a skipped reward (and, if asked, zero-variance groups) leave the mask."""
    algo, b = tr.cfg.algo, rollouts.batch
    mask = b.response_mask.float() * scored.valid[:, None].float()
    group_adv, zero_var = algos.group_advantages(scored.rewards, b.group_ids, algo.reward_scale, valid=scored.valid)
    if algo.name == "grpo":
        advantages, returns = group_adv[:, None].expand_as(mask) * mask, None
    else:
        token_rewards = algos.final_token_rewards(scored.rewards, b.response_mask)
        advantages, returns = algos.gae(token_rewards, old.values, mask, algo.gamma, algo.lam)
    if algo.drop_zero_variance:
        mask = mask * (~zero_var)[:, None].float()
    groups = torch.unique(b.group_ids)
    zero_groups = torch.unique(b.group_ids[zero_var])
    metrics = {"zero_variance_groups": len(zero_groups) / max(len(groups), 1),
               "advantage_abs_mean": float(algos.masked_mean(advantages.abs(), mask))}
    return Advantages(advantages=advantages, returns=returns, mask=mask, metrics=metrics)


def update_step(tr: Trainer, rollouts: Rollouts, old: OldValues, adv: Advantages, step: int) -> dict[str, float]:
    """`update_epochs × minibatches` optimiser steps on the step's rollouts; returns the update's metrics.

    Each minibatch's loss is normalised by its global count (tokens or rows, over every micro-batch and rank),
    so accumulation over micro-batches and ranks gives the loss of the whole minibatch. A non-finite loss or
    gradient norm skips that optimiser step and is counted; more than `run.max_nan_skips` stops the run.
    """
    from mgrd.train.distributed import all_sum, clip_grad_norm, grad_sync

    algo, optim = tr.cfg.algo, tr.cfg.optim
    world = tr.dist.world_size if tr.dist is not None else 1
    models = [m for m in (tr.policy, tr.critic) if m is not None]
    for m in models:
        m.train()
    # every row, even one without loss tokens: each rank then runs the same number of forwards (FSDP2 needs it)
    rows = torch.arange(adv.mask.shape[0], device=adv.mask.device)
    generator = torch.Generator().manual_seed(tr.cfg.run.seed * 1_000_003 + step)
    sums: dict[str, float] = {}
    ratio_max = 0.0
    for _ in range(algo.update_epochs):
        order = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
        for chunk in _split(order, algo.minibatches):
            count = algos.aggregation_count(adv.mask[chunk], algo.aggregation)
            denominator = max(float(all_sum(float(count), tr.dist)), 1.0) / world
            parts = micro_batches(chunk, optim.micro_batch_size)
            for i, mb in enumerate(parts):
                with contextlib.ExitStack() as sync:  # all-reduce gradients on the last micro-batch only
                    for model in models:
                        sync.enter_context(grad_sync(model, i == len(parts) - 1))
                    stats = _micro_loss(tr, rollouts, old, adv, mb, denominator)
                ratio_max = max(ratio_max, stats.pop("ratio_max"))
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            _optimiser_step(tr, sums, clip_grad_norm)
    steps = algo.optimiser_steps_per_rollout
    tokens = max(sums.pop("tokens", 0.0), 1.0)
    metrics = {k: sums[k] / steps for k in ("loss", "policy_loss", "value_loss", "kl_loss", "grad_norm") if k in sums}
    metrics.update({k: sums[k] / tokens for k in ("entropy", "kl", "approx_kl", "clip_fraction", "value_clip_fraction")
                    if k in sums})
    metrics["ratio_max"] = ratio_max
    tr.scheduler.step()
    return metrics


def _split(rows: torch.Tensor, n: int) -> list[torch.Tensor]:
    """`rows` in `n` near-equal consecutive minibatches (empty ones dropped)."""
    return [c for c in torch.tensor_split(rows, n) if len(c)]


def _micro_loss(tr: Trainer, rollouts: Rollouts, old: OldValues, adv: Advantages, mb: torch.Tensor,
                denominator: float) -> dict[str, float]:
    """Forward and backward of one micro-batch; returns its summed metrics (token-weighted where per token)."""
    algo = tr.cfg.algo
    sub, steps = take_rows(rollouts, mb)
    mask, advantages = adv.mask[mb, :steps], adv.advantages[mb, :steps]
    with tr.autocast():
        logits = response_logits(tr.policy, sub)
    logprobs = algos.token_logprobs(logits, sub.response_ids)
    entropy = algos.entropy_from_logits(logits.detach() if algo.entropy_coef == 0 else logits)
    old_logprobs = logprobs.detach() if old.logprobs is None else old.logprobs[mb, :steps]
    pg_loss, clip_fraction = algos.policy_loss(logprobs, old_logprobs, advantages, mask, algo.clip_low,
                                               algo.clip_high, algo.aggregation, denominator)
    loss = pg_loss
    tokens = float(mask.sum())
    stats = {"policy_loss": float(pg_loss.detach()), "tokens": tokens, "clip_fraction": float(clip_fraction) * tokens,
             "entropy": float(algos.masked_mean(entropy.detach(), mask)) * tokens,
             # KL(old || current) on the old policy's samples: 0 on the first update of a rollout
             "approx_kl": float(algos.masked_mean(algos.kl_penalty(old_logprobs, logprobs.detach(), "k3"), mask))
             * tokens,
             "ratio_max": float(((logprobs.detach() - old_logprobs).exp() * mask).max()) if tokens else 0.0}
    if algo.entropy_coef:
        loss = loss - algo.entropy_coef * algos.aggregate(entropy, mask, algo.aggregation, denominator)
    if old.ref_logprobs is not None:
        kl = algos.kl_penalty(logprobs, old.ref_logprobs[mb, :steps], algo.kl_estimator)
        kl_loss = algos.aggregate(kl, mask, algo.aggregation, denominator)
        loss = loss + algo.kl_coef * kl_loss
        stats.update(kl_loss=float(kl_loss.detach()), kl=float(algos.masked_mean(kl.detach(), mask)) * tokens)
    if tr.critic is not None:
        with tr.autocast():
            values = response_logits(tr.critic, sub)[..., 0].float()
        v_loss, v_clip = algos.value_loss(values, old.values[mb, :steps], adv.returns[mb, :steps], mask,
                                          algo.value_clip, algo.aggregation, denominator)
        loss = loss + v_loss  # disjoint parameters: the critic's gradient is the value loss's alone
        stats.update(value_loss=float(v_loss.detach()), value_clip_fraction=float(v_clip) * tokens)
    loss.backward()
    stats["loss"] = float(loss.detach())
    return stats


def _optimiser_step(tr: Trainer, sums: dict, clip_grad_norm) -> None:
    """Clip each model's gradients, step (or skip a non-finite step and count it), zero the gradients."""
    for tracker in tr.unused:
        tracker.drop_grads(tr.dist)
    norms = [clip_grad_norm(m.parameters(), tr.cfg.optim.grad_clip or float("inf"))
             for m in (tr.policy, tr.critic) if m is not None]
    finite = all(math.isfinite(n) for n in norms) and math.isfinite(sums.get("loss", 0.0))
    if finite:
        tr.optimizer.step()
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + norms[0]
    else:
        tr.nan_skips += 1
        if tr.nan_skips > tr.cfg.run.max_nan_skips:
            raise FloatingPointError(f"{tr.nan_skips} optimiser steps had a non-finite loss or gradient norm, more "
                                     f"than run.max_nan_skips={tr.cfg.run.max_nan_skips}")
    tr.optimizer.zero_grad(set_to_none=True)


def rl_step(tr: Trainer, items: list, step: int) -> dict[str, float]:
    """One RL step on this rank's prompts: rollout -> score -> log-probs -> advantages -> update. Returns the
    rank's metrics (the caller reduces them over ranks)."""
    times = {}
    t0 = time.perf_counter()
    rollouts = rollout_step(tr, items, step)
    times["time/rollout"] = time.perf_counter() - t0
    scored = score_step(tr, rollouts)
    tr.reward_skips += int(scored.metrics["reward_skipped"])
    times["time/score"] = time.perf_counter() - t0 - sum(times.values())
    old = logprob_step(tr, rollouts)
    times["time/logprobs"] = time.perf_counter() - t0 - sum(times.values())
    adv = advantage_step(tr, rollouts, scored, old)
    metrics = update_step(tr, rollouts, old, adv, step)
    times["time/update"] = time.perf_counter() - t0 - sum(times.values())
    elapsed = time.perf_counter() - t0
    tokens = float(rollouts.batch.response_lengths.sum())
    metrics.update(scored.metrics, **adv.metrics, **times)
    metrics.update(lr=tr.scheduler.get_last_lr()[0], tokens_per_s=tokens / max(elapsed, 1e-9),
                   nan_skips=float(tr.nan_skips))
    return metrics


@torch.no_grad()
def evaluate(tr: Trainer, items: list) -> dict[str, float]:
    """Greedy decoding (one sample per held-out item) scored like the training rollouts: `eval/`-prefixed
    reward, accuracy, think length and truncation rate of this rank's items."""
    rollouts = rollout_step(tr, items, step=0, sampling=replace(tr.cfg.sampling, temperature=0.0), k=1)
    return {f"eval/{key}": value for key, value in score_step(tr, rollouts).metrics.items()}


def _unwrap(model):
    from mgrd.train.distributed import unwrap

    return unwrap(model)


# ---------------------------------------------------------------------------------------------- setup


def load_items(cfg: RLConfig, run_path: Path) -> list:
    """The prompts' items: the manifests', or a synthetic suite written once into `<run>/data/`.

    Raises:
        ValueError: no manifest and no synthetic family, or no items at all.
    """
    from mgrd.data.manifest import load_manifest
    from mgrd.train.distributed import barrier, is_main

    paths = [Path(p) for p in cfg.data.manifests]
    if not paths:
        if not cfg.data.synth_families:
            raise ValueError("no prompts: set data.manifests, or data.synth_families for a synthetic suite")
        suite = run_path / "data"
        if is_main() and not (suite / "manifest.jsonl").is_file():
            from mgrd.data.synth.writer import synthesize

            synthesize(suite, n=cfg.data.synth_n, seed=cfg.data.synth_seed, families=list(cfg.data.synth_families),
                       workers=1, progress=False)
        barrier()
        paths = [suite / "manifest.jsonl"]
    items = [item for path in paths for item in load_manifest(path)]
    if not items:
        raise ValueError(f"no items in {', '.join(map(str, paths))}: RL needs prompts")
    return check_tasks(items)


def check_tasks(items: list) -> list:
    """`items`, once every one's task is registered (its grader scores the rewards).

    Raises:
        ValueError: the first item of an unregistered task, by FILE:LINE, with the close task names.
    """
    from mgrd.tasks import find_task, get_task

    for item in items:
        if find_task(item.task) is None:
            try:
                get_task(item.task)
            except KeyError as err:  # UnknownTaskError: its message lists close names
                raise ValueError(f"{item.source or item.id}: {err}; register the task (mgrd.tasks.register_task) "
                                 "to grade its rewards") from None
    return items


def load_eval_items(cfg: RLConfig, dist_info) -> list:
    """This rank's held-out items (`data.eval_manifests`, the first `eval_max_items`); every rank gets as many
    (up to W − 1 items are left out), since each sharded forward is a collective."""
    from mgrd.data.manifest import load_manifest
    from mgrd.train.distributed import shard

    items = check_tasks([item for path in cfg.data.eval_manifests for item in load_manifest(path)])
    if cfg.data.eval_max_items:
        items = items[: cfg.data.eval_max_items]
    return shard(items, dist_info, drop_remainder=True)


def step_items(items: list, step: int, per_step: int, seed: int) -> list:
    """The global batch of step `step`: consecutive positions of an endless stream of seeded per-epoch
    permutations (position = step × per_step), so any step's prompts follow from (items, seed, step) alone."""
    n, out = len(items), []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, index = divmod(pos, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.append(items[int(order[index])])
    return out


def build_trainer(cfg: RLConfig, dist_info) -> Trainer:
    """Policy (trainable parts selected, wrapped), value model (PPO), reference (KL), optimiser, schedule, engine.

    As in `mgrd sft`: under FSDP2 the weights load on the CPU and wrapping moves each rank's shards to its GPU;
    activation checkpointing and bf16 compute follow `model`. The value model and the reference are copies of the
    starting policy, wrapped the same way (a frozen reference is never DDP-wrapped: nothing of it syncs).
    """
    from mgrd.train.distributed import UnusedParams, wrap
    from mgrd.train.optim import build_optimizer, build_scheduler, prepare_trainable
    from mgrd.train.sft import activation_checkpointing, load_model_and_tokenizer  # one loader for both stages

    setup, strategy = cfg.model, cfg.model.distributed
    sharded = strategy == "fsdp2" and dist_info.distributed
    policy, tokenizer = load_model_and_tokenizer(setup, torch.device("cpu") if sharded else dist_info.device,
                                                 cfg.run.seed)
    prepare_trainable(policy, setup)
    critic = reference = None
    if cfg.algo.name == "ppo":
        critic = make_critic(policy)
        critic.lm_head.requires_grad_(True)  # the value head trains even when the LLM is LoRA-only
    if cfg.algo.kl_coef > 0:
        reference = make_reference(policy)
    for model in (policy, critic):
        if model is not None and setup.activation_checkpointing:
            activation_checkpointing(model)
    param_dtype = torch.bfloat16 if setup.autocast_bf16 and dist_info.device.type == "cuda" else None
    # wrap before building the optimiser: FSDP2 replaces the parameters with sharded ones
    policy = wrap(policy, strategy, dist_info, param_dtype=param_dtype)
    critic = wrap(critic, strategy, dist_info, param_dtype=param_dtype) if critic is not None else None
    if reference is not None:
        reference = wrap(reference, strategy, dist_info, param_dtype=param_dtype) if sharded else \
            reference.to(dist_info.device)
    optimizer = build_optimizer(policy, cfg.optim)
    if critic is not None:
        critic_groups = build_optimizer(critic, replace(cfg.optim, lr=cfg.algo.critic_lr)).param_groups
        for group in critic_groups:
            optimizer.add_param_group({**group, "lr": cfg.algo.critic_lr})
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.run.max_steps)
    engine = TorchRollout(_unwrap(policy) if strategy == "ddp" else policy, tokenizer,
                          max_rows=cfg.algo.rollout_rows_per_gpu or None)
    # modules that ran on no rank get no gradient (as in one process), not DDP's / FSDP2's zeros
    unused = [UnusedParams(m) for m in (policy, critic) if m is not None]
    return Trainer(cfg=cfg, policy=policy, tokenizer=tokenizer, engine=engine, optimizer=optimizer,
                   scheduler=scheduler, critic=critic, reference=reference, dist=dist_info, unused=unused)


class _Models(nn.Module):
    """Policy and value model under one module, so one checkpoint holds both (and the one optimiser's state)."""

    def __init__(self, policy: nn.Module, critic: nn.Module | None):
        super().__init__()
        self.policy = _unwrap(policy)
        if critic is not None:
            self.critic = _unwrap(critic)


def _fingerprint(tr: Trainer) -> dict:
    from mgrd.train.run import model_fingerprint

    models = _Models(tr.policy, tr.critic)
    names = [n for n, p in models.named_parameters() if p.requires_grad]
    shapes = dict(models.named_parameters())
    doc = model_fingerprint(_unwrap(tr.policy))
    doc["trainable"] = {n: list(shapes[n].shape) for n in names}
    doc["algorithm"] = tr.cfg.algo.name
    return doc


# ---------------------------------------------------------------------------------------------- run


def run(cfg: RLConfig) -> Path:
    """Train; returns the run folder (`final/` holds the policy in the official layout, `done.json` marks the end).

    Raises:
        ValueError: bad data or settings (one line); RewardError: a failing reward function;
        FloatingPointError: too many non-finite steps; CheckpointMismatchError: --resume onto another model.
    """
    from mgrd.train.distributed import check_divisible, cleanup, init, shard
    from mgrd.train.run import RunDir

    dist_info = init(cfg.run.device)
    check_divisible(cfg.algo.prompts_per_step, dist_info.world_size, "algo.prompts_per_step")
    rundir = RunDir(cfg.run.path, is_main=dist_info.is_main, tensorboard=cfg.run.tensorboard)
    try:
        rundir.prepare(cfg, cfg.run.resume)
        items = load_items(cfg, rundir.path)
        torch.manual_seed(cfg.run.seed)
        tr = build_trainer(cfg, dist_info)
        start = _resume(tr, rundir) if cfg.run.resume else 0
        held_out = load_eval_items(cfg, dist_info)
        if held_out and start == 0:
            rundir.log(0, _reduce(evaluate(tr, held_out), dist_info))
        bar = rundir.progress(cfg.run.max_steps, initial=start, enabled=cfg.run.progress)
        for step in range(start, cfg.run.max_steps):
            batch = step_items(items, step, cfg.algo.prompts_per_step, cfg.run.seed)
            metrics = _reduce(rl_step(tr, shard(batch, dist_info), step), dist_info)
            if (step + 1) % cfg.run.log_every == 0 or step + 1 == cfg.run.max_steps:
                rundir.log(step + 1, metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics.get('loss', 0.0):.3g}")
            done = step + 1 == cfg.run.max_steps
            if held_out and (done or (cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0)):
                rundir.log(step + 1, _reduce(evaluate(tr, held_out), dist_info))
            if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0:
                _save(tr, rundir, step + 1)
        from mgrd.train.optim import lora_config_dict

        lora = lora_config_dict(cfg.model.lora) if cfg.model.lora.enabled else None
        rundir.save_final(tr.policy, tr.tokenizer, lora_config=lora)  # the policy only: the value model stays behind
        rundir.finish({"steps": cfg.run.max_steps, "algorithm": cfg.algo.name, "nan_skips": tr.nan_skips,
                       "reward_skips": tr.reward_skips})
    finally:
        rundir.close()
        cleanup()
    return rundir.path


_REDUCE = {"think_len_max": "max", "ratio_max": "max", "reward_skipped": "sum", "nan_skips": "max",
           "tokens_per_s": "sum"}  # every other metric: the mean over ranks


def _reduce(metrics: dict[str, float], dist_info) -> dict[str, float]:
    """A rank's metrics reduced over the ranks (`eval/` keys as their training names)."""
    from mgrd.train.distributed import reduce_metrics

    ops = {key: _REDUCE.get(key.removeprefix("eval/"), "mean") for key in metrics}
    return reduce_metrics(metrics, ops, dist_info)


def _save(tr: Trainer, rundir, step: int) -> None:
    state = {"scheduler": tr.scheduler.state_dict(), "data_position": step * tr.cfg.algo.prompts_per_step,
             "nan_skips": tr.nan_skips, "reward_skips": tr.reward_skips}
    rundir.save_checkpoint(step, _Models(tr.policy, tr.critic), tr.optimizer, state, _fingerprint(tr),
                           keep=tr.cfg.run.keep_checkpoints)


def _resume(tr: Trainer, rundir) -> int:
    """Load the latest checkpoint (0 when there is none); returns the step to continue from."""
    path = rundir.latest_checkpoint()
    if path is None:
        rundir.truncate_metrics(0)
        return 0
    step, state = rundir.load_checkpoint(path, _Models(tr.policy, tr.critic), tr.optimizer, _fingerprint(tr))
    tr.scheduler.load_state_dict(state["scheduler"])
    tr.nan_skips, tr.reward_skips = int(state["nan_skips"]), int(state["reward_skips"])
    rundir.truncate_metrics(step)
    return step


# ---------------------------------------------------------------------------------------------- CLI


def plan(cfg: RLConfig) -> str:
    """What `--dry-run` prints: the algorithm, the batch geometry, the models it would hold, and the per-GPU memory
    plan (`mgrd.train.memory.format_plan`). Loads no weights and allocates nothing."""
    from mgrd.models import ModelConfig
    from mgrd.models.presets import preset_config, tiny
    from mgrd.train.memory import format_plan

    a = cfg.algo
    rows = a.prompts_per_step * a.samples_per_prompt
    models = ["policy"] + (["value model (policy copy, 1-output head)"] if a.name == "ppo" else []) + \
        (["frozen reference (KL)"] if a.kl_coef > 0 else [])
    source = cfg.model.path or f"fresh {cfg.model.preset} preset"
    lines = [f"mgrd rl: {a.name.upper()} from {source}, {cfg.run.max_steps} steps -> {cfg.run.path}",
             f"  per step: {a.prompts_per_step} prompts x {a.samples_per_prompt} samples = {rows} rollouts of up to "
             f"{cfg.sampling.max_new_tokens} tokens; {a.optimiser_steps_per_rollout} optimiser step(s) "
             f"({a.update_epochs} epoch(s) x {a.minibatches} minibatch(es)), {cfg.optim.micro_batch_size} rows "
             "per forward",
             f"  loss: clip [{1 - a.clip_low:g}, {1 + (a.clip_high if a.clip_high is not None else a.clip_low):g}], "
             f"{a.aggregation}, kl {a.kl_coef:g} ({a.kl_estimator}), entropy {a.entropy_coef:g}"
             + (f", GAE gamma {a.gamma:g} lambda {a.lam:g}" if a.name == "ppo" else
                f", rewards scaled by {a.reward_scale} std, zero-variance groups "
                f"{'dropped' if a.drop_zero_variance else 'kept'}"),
             f"  rewards: {', '.join(f'{k} x {v:g}' for k, v in cfg.reward.functions.items())}",
             f"  models held: {', '.join(models)}; distributed: {cfg.model.distributed}"]
    if cfg.model.path is not None and (Path(cfg.model.path) / "config.json").is_file():
        config = ModelConfig.from_file(Path(cfg.model.path) / "config.json")
    else:
        config = tiny() if cfg.model.preset == "tiny" else preset_config(cfg.model.preset)
        if cfg.model.path is not None:
            lines.append(f"  note: {cfg.model.path}/config.json not found; planning the {cfg.model.preset} preset")
    return "\n".join(lines + [format_plan(config, cfg)])


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `rl` to a top-level argparse subparsers object (`mgrd.cli`)."""
    p = subparsers.add_parser(
        "rl", help="RL with verifiable rewards (PPO as in the report, or GRPO)",
        description="Reinforcement learning on verifiable rewards: each step samples K completions per prompt, "
        "scores them with the reward functions, and updates the policy with PPO (value model, GAE) or GRPO "
        "(group-normalised advantages). Writes runs/<name>/ (metrics.jsonl, tb/, checkpoints/, final/).",
        epilog="config keys (set with --set key=value):\n" + "\n".join(describe(RLConfig)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="rl_tiny", help="YAML file or named config (default rl_tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set algo.name=grpo (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the plan (no model, no data, no folder)")
    p.set_defaults(func=cmd_rl)
    return p


def cmd_rl(args: argparse.Namespace) -> int:
    """`mgrd rl`: bad input raises ValueError / FileNotFoundError (`mgrd.cli.run` prints one `error:` line, exit 2)."""
    from mgrd.config import load_config

    cfg = load_config(RLConfig, args.config, args.overrides + (["run.resume=true"] if args.resume else []))
    if args.dry_run:
        print(plan(cfg))
        return 0
    path = run(cfg)
    if os.environ.get("RANK", "0") == "0":  # the process group is gone by now: ask torchrun's environment
        print(f"wrote {path / 'final'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mgrd.train.rl ...`: the `mgrd rl` command without the top-level CLI."""
    from mgrd.cli import run_stage  # the same exit codes and signal handling as `mgrd rl ...`

    return run_stage(add_parser, "rl", argv)


if __name__ == "__main__":
    sys.exit(main())
