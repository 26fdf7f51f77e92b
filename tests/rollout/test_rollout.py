"""Tests for mgrd.rollout: log-probs against a teacher-forced forward, batch layout, cache, stop ids, context."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mgrd.audio import pad_mels
from mgrd.data.collate import collate_prompts
from mgrd.generate import Prompt, SamplingConfig, generate, process_logits
from mgrd.models import build_model
from mgrd.models.presets import tiny
from mgrd.rollout import RolloutBatch, TorchRollout, fit_context, resolve_stop_ids, response_logprobs, rollout

# Sampling that exercises every filter: the penalty, temperature, top-k and top-p all change the distribution.
FILTERED = SamplingConfig(max_new_tokens=10, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3, seed=3)


@pytest.fixture(scope="module")
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=2).eval()


@pytest.fixture(scope="module")
def prompts(mixed_prompts):
    return mixed_prompts  # tests/conftest.py


@torch.no_grad()
def teacher_forced(model, prompt: Prompt, response: list[int]) -> torch.Tensor:
    """`[T, V]` float32 logits predicting each response token, from one full forward over prompt + response."""
    full = torch.tensor([list(prompt.input_ids) + response])
    audio = pad_mels(prompt.mels) if prompt.mels else (None, None)
    logits = model(full, None, *audio).logits[0].float()
    return logits[len(prompt.input_ids) - 1 : -1]


def processed_logprobs(model, prompt: Prompt, response: list[int], cfg: SamplingConfig, banned) -> list[float]:
    """Re-derive the sampled distribution at each position: audio-id ban, penalty on the prompt and the earlier
    response tokens, temperature, top-k, top-p; its log-prob at each response token."""
    logits = teacher_forced(model, prompt, response)
    out = []
    for t, tok in enumerate(response):
        seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool)
        seen[0, list(prompt.input_ids) + response[:t]] = True
        row = logits[t : t + 1].index_fill(1, torch.tensor(banned), float("-inf"))
        out.append(process_logits(row, seen, cfg).log_softmax(-1)[0, tok].item())
    return out


def test_logprobs_equal_teacher_forced_processed_distribution(model, prompts, ids):
    batch = rollout(model, prompts, FILTERED, num_samples=2)
    banned = [ids.audio_start, ids.audio_end, ids.audio_patch]
    differ = 0.0
    for r in range(batch.num_rows):
        prompt, response = prompts[int(batch.group_ids[r])], batch.row_tokens(r)
        n = len(response)
        want = processed_logprobs(model, prompt, response, FILTERED, banned)
        torch.testing.assert_close(batch.logprobs[r, :n], torch.tensor(want), atol=1e-5, rtol=0)
        raw = teacher_forced(model, prompt, response).log_softmax(-1).gather(-1, torch.tensor(response)[:, None])
        torch.testing.assert_close(batch.policy_logprobs[r, :n], raw.squeeze(-1), atol=1e-5, rtol=0)
        differ = max(differ, (batch.logprobs[r, :n] - batch.policy_logprobs[r, :n]).abs().max().item())
        assert not batch.logprobs[r, n:].any() and not batch.policy_logprobs[r, n:].any()  # 0 on padding
    assert differ > 0.1  # the filters really changed the distribution, so the two checks are different checks


def test_batched_teacher_forcing_gives_the_policy_logprobs(model, prompts):
    """One padded forward over the whole batch (prompt left-padded, response right-padded, audio per row)."""
    free = rollout(model, prompts, FILTERED, num_samples=2)
    cfg = dataclasses.replace(FILTERED, stop_ids=(free.row_tokens(2)[1],))  # some rows now end early
    batch = rollout(model, prompts, cfg, num_samples=2)
    assert batch.mels.shape[0] == 2 * sum(len(p.mels) for p in prompts)  # each row carries its prompt's chunks
    assert batch.response_lengths[2] == 2 and batch.response_lengths.max() == 10  # right padding in the batch
    torch.testing.assert_close(response_logprobs(model, batch), batch.policy_logprobs, atol=1e-5, rtol=0)


def test_greedy_logprobs_are_the_penalised_distribution(model, prompts, ids):
    cfg = SamplingConfig(max_new_tokens=6, temperature=0, repetition_penalty=1.3, top_k=1)
    batch = rollout(model, prompts, cfg)
    banned = [ids.audio_start, ids.audio_end, ids.audio_patch]
    for r, prompt in enumerate(prompts):
        want = processed_logprobs(model, prompt, batch.row_tokens(r), cfg, banned)  # greedy ignores top-k
        torch.testing.assert_close(batch.logprobs[r], torch.tensor(want), atol=1e-5, rtol=0)


def test_batch_layout(model, prompts, tok, ids):
    batch = rollout(model, prompts, SamplingConfig(max_new_tokens=5, seed=0), num_samples=3, tokenizer=tok)
    assert isinstance(batch, RolloutBatch)
    assert (batch.num_rows, batch.num_prompts, batch.num_samples) == (9, 3, 3)
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    collated = collate_prompts(prompts, ids.pad)
    assert torch.equal(batch.prompt_ids, collated.input_ids.repeat_interleave(3, 0))
    assert torch.equal(batch.prompt_mask, collated.attention_mask.repeat_interleave(3, 0))
    for r in range(9):
        n = int(batch.response_lengths[r])
        assert batch.response_mask[r].tolist() == [1] * n + [0] * (batch.response_ids.shape[1] - n)
        assert (batch.response_ids[r, n:] == ids.pad).all()
        tokens = batch.row_tokens(r)
        assert batch.finish_reasons[r] == ("stop" if tokens[-1] in (ids.eot, ids.eos) else "length")
        assert batch.texts[r] == tok.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert torch.equal(batch.input_ids, torch.cat([batch.prompt_ids, batch.response_ids], 1))
    assert batch.logprobs.dtype == batch.policy_logprobs.dtype == torch.float32


def test_sampled_with_cache_equals_without(model, prompts):
    """Same seed, same tokens: the prefilled-and-repeated cache and the full recompute sample alike."""
    cached = rollout(model, prompts, FILTERED, num_samples=3)
    full = rollout(model, prompts, FILTERED, num_samples=3, use_cache=False)
    assert torch.equal(cached.response_ids, full.response_ids)
    torch.testing.assert_close(cached.logprobs, full.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.policy_logprobs, full.policy_logprobs, atol=1e-5, rtol=0)


def test_rows_equal_their_prompt_alone(model, prompts):
    """Batched and padded, K samples each, greedy: every row is what its prompt gives alone."""
    cfg = SamplingConfig(max_new_tokens=8, temperature=0, repetition_penalty=1.3)
    batch = rollout(model, prompts, cfg, num_samples=2)
    for r in range(batch.num_rows):
        alone = rollout(model, [prompts[r // 2]], cfg)
        assert batch.row_tokens(r) == alone.row_tokens(0)
        torch.testing.assert_close(batch.policy_logprobs[r], alone.policy_logprobs[0], atol=1e-5, rtol=0)


def test_engine_and_generate_agree(model, prompts, tok):
    batch = TorchRollout(model, tokenizer=tok).generate(prompts, FILTERED, num_samples=2)
    lists = generate(model, prompts, FILTERED, num_samples=2, tokenizer=tok)
    for r in range(batch.num_rows):
        c = lists[r // 2][r % 2]
        assert c.token_ids == batch.row_tokens(r) and c.text == batch.texts[r]
        assert c.finish_reason == batch.finish_reasons[r]
        assert c.logprobs == batch.policy_logprobs[r, : len(c.token_ids)].tolist()


# --------------------------------------------------------------------------------------------- stop ids, context


def test_stop_ids_come_from_the_model_config(tok, ids, prompts):
    """The config's eos_token_id list ends generation with no stop id in the SamplingConfig."""
    config = tiny(len(tok), ids)
    free = rollout(build_model(config, seed=2).eval(), prompts[:1], SamplingConfig(max_new_tokens=8, temperature=0))
    tokens = free.row_tokens(0)
    assert free.finish_reasons == ["length"] and ids.eot not in tokens
    config.text["eos_token_id"] = [ids.eos, tokens[2]]  # released configs list several
    stopped = rollout(build_model(config, seed=2).eval(), prompts[:1], SamplingConfig(max_new_tokens=8, temperature=0))
    assert stopped.row_tokens(0) == tokens[: tokens.index(tokens[2]) + 1]
    assert stopped.finish_reasons == ["stop"]


def test_resolve_stop_ids(tok, ids):
    config = tiny(len(tok), ids)
    assert config.stop_ids() == (ids.eot, ids.eos)
    assert resolve_stop_ids(config, SamplingConfig(stop_ids=(5, ids.eot))) == (ids.eot, ids.eos, 5)  # extras add
    bare = tiny(len(tok))
    assert resolve_stop_ids(bare, SamplingConfig(stop_ids=(5,))) == (5,)
    with pytest.raises(ValueError, match="no stop ids"):
        resolve_stop_ids(bare, SamplingConfig())


def test_context_limit(tok, ids, prompts):
    config = copy.deepcopy(tiny(len(tok), ids))
    longest = max(len(p.input_ids) for p in prompts)
    config.text["max_position_embeddings"] = longest + 4
    assert fit_context(config, prompts, 4) == 4
    with pytest.warns(UserWarning, match="max_new_tokens 16 capped to 4"):
        assert fit_context(config, prompts, 16) == 4
    small = build_model(config, seed=2).eval()
    with pytest.warns(UserWarning, match="capped to 4"):
        batch = rollout(small, prompts, SamplingConfig(max_new_tokens=16, temperature=0))
    assert batch.response_ids.shape[1] <= 4 and batch.response_lengths.max() == 4
    config.text["max_position_embeddings"] = longest
    with pytest.raises(ValueError, match=f"prompt of {longest} tokens does not fit the model's {longest} positions"):
        fit_context(config, prompts, 1)


def test_bad_calls_raise(model, prompts):
    with pytest.raises(ValueError, match="num_samples"):
        rollout(model, prompts, FILTERED, num_samples=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        rollout(model, [], FILTERED)
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        rollout(model, [prompts[0], Prompt([])], FILTERED)


# --------------------------------------------------------------------------------------------- forward alone


class ForwardOnly(torch.nn.Module):
    """Exposes the wrapped model's `forward`, `config` and parameters, nothing else (as a wrapper would)."""

    def __init__(self, inner):
        super().__init__()
        self._inner = [inner]  # a list: not registered as a submodule, so it cannot be reached through this one
        self.weights = torch.nn.ParameterList(inner.parameters())
        self.config = inner.config

    def forward(self, *args, **kwargs):
        return self._inner[0](*args, **kwargs)


def test_generation_needs_only_forward(model, prompts):
    wrapped = ForwardOnly(model)
    for name in ("embed", "encode_audio", "model", "lm_head", "encoder"):
        assert not hasattr(wrapped, name)
    cfg = SamplingConfig(max_new_tokens=6, temperature=0, repetition_penalty=1.3)
    assert torch.equal(rollout(wrapped, prompts, cfg, num_samples=2).response_ids,
                       rollout(model, prompts, cfg, num_samples=2).response_ids)


def test_placeholders_checked_at_prefill_only(model, prompts, monkeypatch):
    """The placeholder check reads the ids on the host; decoding steps (cache, no mels) must not run it."""
    import mgrd.models.reasoner as reasoner

    calls = []
    original = reasoner._patch_runs
    monkeypatch.setattr(reasoner, "_patch_runs", lambda is_patch: calls.append(1) or original(is_patch))
    batch = rollout(model, prompts, SamplingConfig(max_new_tokens=8, temperature=0), num_samples=2)
    assert batch.response_ids.shape[1] == 8 and len(calls) == 1
