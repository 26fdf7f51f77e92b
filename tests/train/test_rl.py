"""mgrd.train.rl: the step's sub-steps on the tiny preset (real tokenizer, model, tasks and graders), the config,
the CLI, and a short run's metrics, checkpoints, resume and final model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from mgrd.config import ConfigKeyError, load_config
from mgrd.data.manifest import Item
from mgrd.models import load_pretrained
from mgrd.train import algos
from mgrd.train.distributed import DistInfo
from mgrd.train.rewards import REWARDS, RewardError
from mgrd.train.rl import (
    AlgoConfig, RLConfig, advantage_step, build_trainer, logprob_step, main, micro_batches, response_logits,
    rollout_step, score_step, step_items, take_rows, update_step,
)

BASE = ["run.tensorboard=false", "run.progress=false", "sampling.max_new_tokens=6", "algo.prompts_per_step=3",
        "algo.samples_per_prompt=2", "optim.micro_batch_size=4", "optim.lr=1e-3"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: why one thread


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Two text items and one audio item (a 0.6 s tone written to disk), through the registered tasks."""
    folder = tmp_path_factory.mktemp("clips")
    t = np.arange(int(16_000 * 0.6)) / 16_000
    sf.write(folder / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    return [
        Item(id="c0", task="text_compare", question="Which is larger: 3 km or 2600 m?",
             choices=["3 km", "2600 m"], answer="3 km"),
        Item(id="p0", task="pitch_compare", audio=[folder / "tone.wav"], question="Which of the two tones is higher?",
             choices=["the first", "the second"], answer="the second"),
        Item(id="a0", task="text_arithmetic", question="What is 3 * 4?", answer="12"),
    ]


def trainer(*overrides):
    cfg = load_config(RLConfig, None, BASE + list(overrides))
    torch.manual_seed(0)
    return build_trainer(cfg, DistInfo())


# ---------------------------------------------------------------------------------------------- config


def test_unknown_algorithm_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown algorithm 'dpo'; choose one of ppo, grpo"):
        AlgoConfig(name="dpo")
    assert main(["--set", "algo.name=dpo", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown algorithm 'dpo'; choose one of ppo, grpo" in err


def test_config_errors_name_the_key(capsys):
    with pytest.raises(ConfigKeyError, match="unknown config key algo.clip_lo .*did you mean algo.clip_low"):
        load_config(RLConfig, None, ["algo.clip_lo=0.3"])
    with pytest.raises(ConfigKeyError, match="algo.aggregation must be one of token-mean"):
        load_config(RLConfig, None, ["algo.aggregation=mean"])
    with pytest.raises(ConfigKeyError, match="optim.grad_accum is not used by RL"):
        load_config(RLConfig, None, ["optim.grad_accum=2"])


def test_dry_run_prints_the_plan_and_help_lists_every_key(capsys):
    assert main(["--config", "rl_tiny", "--set", "algo.name=grpo", "--set", "algo.kl_coef=0.01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "GRPO" in out and "frozen reference (KL)" in out and "value model" not in out
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for key in ("algo.clip_high", "algo.drop_zero_variance", "reward.functions", "sampling.max_new_tokens"):
        assert key in help_text


def test_every_rl_config_loads_and_the_gpu_ones_are_the_reports_ppo():
    from mgrd.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("rl_*.yaml"))
    assert {"rl_tiny", "rl_step_audio_2_mini", "rl_step_audio_r1"} <= set(names)
    for name in names:
        cfg = load_config(RLConfig, name)
        if name != "rl_tiny":  # Step-Audio-R1 §4.3: PPO, 16 rollouts, clip 0.2, gamma = lambda = 1, no KL, 10,240
            a = cfg.algo
            assert (a.name, a.samples_per_prompt, a.clip_low, a.clip_high, a.gamma, a.lam, a.kl_coef) == \
                ("ppo", 16, 0.2, None, 1.0, 1.0, 0.0), name
            assert cfg.sampling.max_new_tokens == 10240 and cfg.model.distributed == "fsdp2", name


def test_an_unregistered_task_and_an_empty_manifest_are_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "task": "text_compar", "question": "q?", "answer": "a"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for manifest, message in ((bad, f"{bad}:1: unknown task 'text_compar'; did you mean text_compare"),
                              (empty, f"{empty}: manifest has no rows")):
        args = ["--set", f"data.manifests=[{manifest}]", "--set", f"run.out_dir={tmp_path}",
                "--set", f"run.name={manifest.stem}", "--set", "run.progress=false"]
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_step_items_are_a_function_of_the_step():
    items = list(range(5))
    first = [step_items(items, s, 2, seed=3) for s in range(5)]  # 10 positions = two epochs
    assert first == [step_items(items, s, 2, seed=3) for s in range(5)]
    flat = [x for batch in first for x in batch]
    assert sorted(flat[:5]) == items and sorted(flat[5:]) == items  # each epoch a permutation
    assert flat[:5] != flat[5:]


# ---------------------------------------------------------------------------------------------- sub-steps


def test_rollout_logprobs_equal_trainer_logprobs_and_the_first_ratio_is_one(items):
    """The engine's policy log-probs are the trainer's teacher-forced log-probs on the same tokens (fp32
    rounding); with one optimiser step per rollout the old log-probs are the current ones, so the first (and
    only) update sees a ratio of exactly 1 and clips nothing."""
    tr = trainer("algo.name=grpo", "algo.samples_per_prompt=3")
    rollouts = rollout_step(tr, items, step=0)
    b = rollouts.batch
    assert b.num_rows == 9 and b.mels.shape[0] == 3  # the audio item's clip, repeated for its 3 rows
    with torch.no_grad():
        full = algos.token_logprobs(response_logits(tr.policy, b), b.response_ids) * b.response_mask
        torch.testing.assert_close(full, b.policy_logprobs, atol=1e-5, rtol=0)
        for mb in micro_batches(torch.arange(9), 4):  # trimmed sub-batches score the same tokens the same way
            sub, steps = take_rows(rollouts, mb)
            part = algos.token_logprobs(response_logits(tr.policy, sub), sub.response_ids) * sub.response_mask
            torch.testing.assert_close(part, b.policy_logprobs[mb, :steps], atol=1e-5, rtol=0)
    scored = score_step(tr, rollouts)
    scored.rewards = torch.tensor([1.0, 0.0, 0.5] * 3)  # a signal in every group, so the loss has gradient
    old = logprob_step(tr, rollouts)
    assert old.logprobs is None and old.values is None and old.ref_logprobs is None
    adv = advantage_step(tr, rollouts, scored, old)
    metrics = update_step(tr, rollouts, old, adv, step=0)
    assert metrics["ratio_max"] == 1.0 and metrics["clip_fraction"] == 0.0
    assert metrics["grad_norm"] > 0


def test_rollouts_in_several_generate_calls_form_one_consistent_batch(items):
    """`rollout_prompts_per_gpu=2` samples the three prompts in two calls; the joined batch is re-padded, its
    groups renumbered and its audio kept with its rows, so the trainer still scores it exactly as sampled."""
    tr = trainer("algo.name=grpo", "algo.rollout_prompts_per_gpu=2")
    rollouts = rollout_step(tr, items, step=0)
    b = rollouts.batch
    assert b.group_ids.tolist() == [0, 0, 1, 1, 2, 2] and b.mels.shape[0] == 2
    assert [r["id"] for r in map(vars, rollouts.items)] == ["c0", "p0", "a0"]
    with torch.no_grad():
        full = algos.token_logprobs(response_logits(tr.policy, b), b.response_ids) * b.response_mask
    torch.testing.assert_close(full, b.policy_logprobs, atol=1e-5, rtol=0)


def test_refilled_rollouts_on_two_slots_are_scored_as_sampled(items):
    """`rollout_rows_per_gpu=2`: the six rows share two slots (continuous refill); the trainer's teacher-forced
    log-probs still equal the engine's, and greedy rows equal those of one wave."""
    tr = trainer("algo.name=grpo", "algo.rollout_rows_per_gpu=2")
    assert tr.engine.max_rows == 2
    b = rollout_step(tr, items, step=0).batch
    with torch.no_grad():
        full = algos.token_logprobs(response_logits(tr.policy, b), b.response_ids) * b.response_mask
    torch.testing.assert_close(full, b.policy_logprobs, atol=1e-5, rtol=0)
    greedy = replace(tr.cfg.sampling, temperature=0.0)
    two = rollout_step(tr, items, step=0, sampling=greedy).batch
    tr.engine.max_rows = None
    assert torch.equal(rollout_step(tr, items, step=0, sampling=greedy).batch.response_ids, two.response_ids)


@pytest.mark.parametrize("source", ["recompute", "rollout"])
def test_recomputed_or_engine_old_logprobs_give_a_ratio_of_one_to_rounding(items, source):
    tr = trainer("algo.name=grpo", f"algo.old_logprobs={source}")
    rollouts = rollout_step(tr, items, step=0)
    scored = score_step(tr, rollouts)
    scored.rewards = torch.tensor([1.0, 0.0] * 3)
    old = logprob_step(tr, rollouts)
    torch.testing.assert_close(old.logprobs, rollouts.batch.policy_logprobs, atol=1e-5, rtol=0)
    metrics = update_step(tr, rollouts, old, advantage_step(tr, rollouts, scored, old), step=0)
    assert abs(metrics["ratio_max"] - 1.0) < 1e-4 and metrics["clip_fraction"] == 0.0


def test_ppo_starts_from_zero_values_so_advantages_are_the_rewards(items):
    """The value head starts at zero, so with γ = λ = 1 every token's advantage is its row's final reward."""
    tr = trainer("algo.name=ppo")
    rollouts = rollout_step(tr, items, step=0)
    scored = score_step(tr, rollouts)
    scored.rewards = torch.tensor([1.0, 0.0, 0.8, 0.2, 0.0, 1.0])
    old = logprob_step(tr, rollouts)
    assert old.values is not None and not old.values.any()
    adv = advantage_step(tr, rollouts, scored, old)
    mask = rollouts.batch.response_mask.float()
    torch.testing.assert_close(adv.advantages, scored.rewards[:, None] * mask)
    torch.testing.assert_close(adv.returns, scored.rewards[:, None] * mask)
    head = tr.critic.lm_head.weight.detach().clone()
    metrics = update_step(tr, rollouts, old, adv, step=0)
    assert metrics["value_loss"] > 0 and not torch.equal(head, tr.critic.lm_head.weight)


def test_grpo_scores_and_drops_zero_variance_groups(items):
    tr = trainer("algo.name=grpo", "algo.drop_zero_variance=true", "algo.reward_scale=none")
    rollouts = rollout_step(tr, items, step=0)
    scored = score_step(tr, rollouts)
    assert set(scored.metrics) >= {"reward", "accuracy", "think_len_mean", "think_len_max", "truncation_rate",
                                   "reward/report"}
    scored.rewards = torch.tensor([1.0, 0.0, 0.3, 0.3, 0.5, 0.5])  # only group 0 has a signal
    adv = advantage_step(tr, rollouts, scored, logprob_step(tr, rollouts))
    mask = rollouts.batch.response_mask.float()
    torch.testing.assert_close(adv.advantages[:2], torch.tensor([[0.5], [-0.5]]) * mask[:2])
    assert adv.mask[:2].equal(mask[:2]) and not adv.mask[2:].any()
    assert adv.metrics["zero_variance_groups"] == pytest.approx(2 / 3)


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")  # the skipped step, on purpose
def test_a_non_finite_loss_skips_the_step_and_too_many_stop_the_run(items):
    tr = trainer("algo.name=grpo", "run.max_nan_skips=1")
    rollouts = rollout_step(tr, items, step=0)
    old = logprob_step(tr, rollouts)
    adv = advantage_step(tr, rollouts, score_step(tr, rollouts), old)
    adv.advantages = torch.full_like(adv.advantages, float("nan"))
    before = {n: p.detach().clone() for n, p in tr.policy.named_parameters() if p.requires_grad}
    update_step(tr, rollouts, old, adv, step=0)
    assert tr.nan_skips == 1
    assert all(torch.equal(before[n], p) for n, p in tr.policy.named_parameters() if p.requires_grad)
    with pytest.raises(FloatingPointError, match="2 optimiser steps had a non-finite loss"):
        update_step(tr, rollouts, old, adv, step=1)


def test_too_many_nan_rewards_stop_the_step(items):
    REWARDS["test_rl_nan"] = lambda completions, **columns: [float("nan")] * len(completions)
    try:
        tr = trainer("algo.name=grpo", "reward.functions={test_rl_nan: 1.0}")
        with pytest.raises(RewardError, match="6 of 6 rollouts got a NaN or infinite reward"):
            score_step(tr, rollout_step(tr, items, step=0))
    finally:
        REWARDS.pop("test_rl_nan")


# ---------------------------------------------------------------------------------------------- a short run


def write_manifest(path, n=6):
    rows = [{"id": f"c{i}", "task": "text_compare", "question": f"Which is larger: {i} or {i + 1}?",
             "choices": [str(i), str(i + 1)], "answer": str(i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.integration  # three short runs of the tiny preset (~20 s on a shared 2-core machine)
def test_run_logs_every_metric_resumes_exactly_and_saves_a_loadable_final(tmp_path, tok):
    manifest = write_manifest(tmp_path / "m.jsonl")
    common = ["--config", "rl_tiny", "--set", f"data.manifests=[{manifest}]", "--set", f"run.out_dir={tmp_path}",
              "--set", "run.max_steps=3", "--set", "run.progress=false", "--set", "algo.prompts_per_step=2",
              "--set", "algo.samples_per_prompt=2", "--set", "sampling.max_new_tokens=5", "--set", "algo.name=ppo"]
    assert main(common + ["--set", "run.name=whole", "--set", f"data.eval_manifests=[{manifest}]"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    evals, rows = [r for r in logged if "eval/reward" in r], [r for r in logged if "eval/reward" not in r]
    assert [r["step"] for r in evals] == [0, 3] and [r["step"] for r in rows] == [1, 2, 3]
    assert {"eval/accuracy", "eval/think_len_max", "eval/truncation_rate"} <= set(evals[0])
    for key in ("loss", "reward", "reward/report", "accuracy", "think_len_mean", "think_len_max", "truncation_rate",
                "zero_variance_groups", "entropy", "approx_kl", "clip_fraction", "lr", "grad_norm", "tokens_per_s",
                "value_loss"):
        assert key in rows[-1], key
    # killed after step 2 (its checkpoint), then resumed: the same step-3 metrics and weights
    assert main(common + ["--set", "run.name=cut", "--set", "run.max_steps=2", "--set", "run.save_every=1"]) == 0
    (tmp_path / "cut" / "done.json").unlink()
    assert main(common + ["--set", "run.name=cut", "--set", "run.save_every=1", "--resume"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in ("loss", "reward", "grad_norm", "entropy"):
        assert resumed[-1][key] == pytest.approx(rows[-1][key], rel=1e-5, abs=1e-6), key
    whole = load_pretrained(tmp_path / "whole" / "final")
    cut = load_pretrained(tmp_path / "cut" / "final")
    for (name, a), (_, b) in zip(whole.state_dict().items(), cut.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
