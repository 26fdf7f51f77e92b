"""The fast decode path (static KV cache, lean step) and continuous refill agree with the model's own forward.

Invariants: the lean step's logits equal `model(...)` with the transformers cache at every step; greedy tokens are
those of the plain cached loop; refill, static waves and one wave give the same greedy rows, and refill takes
fewer steps when rows stop at different times; log-probs recorded while refilling equal a teacher-forced forward;
seeded refilling is reproducible; models the fast path does not cover (LoRA-wrapped) fall back to the forward.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch

from mgrd.data.collate import collate_prompts
from mgrd.generate import Prompt, SamplingConfig
from mgrd.models import build_model
from mgrd.models.presets import tiny
from mgrd.rollout import response_logprobs, rollout, stream_tokens
from mgrd.rollout.engine import audio_ids, resolve_stop_ids
from mgrd.rollout import fast as fast_module
from mgrd.rollout.fast import LAYOUTS, FastDecoder, StaticKV, _can_pack, _Packed, default_layout, supports_fast_path
from mgrd.rollout.slots import slot_rollout

GREEDY = SamplingConfig(max_new_tokens=12, temperature=0)
SAMPLED = SamplingConfig(max_new_tokens=12, temperature=0.9, top_k=50, repetition_penalty=1.2, seed=5)


@pytest.fixture(scope="module")
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=4).eval()


@pytest.fixture(scope="module")
def biased(model):
    """The model with non-zero q/k/v biases (a fresh Qwen2 starts them at zero, which would hide a dropped bias)."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in out.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.copy_(0.1 * torch.randn(proj.bias.shape, generator=gen))
    return out


@pytest.fixture(scope="module")
def prompts(mixed_prompts, ids):
    """The three mixed prompts (audio, two chunks, none) and three text prompts of other lengths."""
    extra = [Prompt([ids.bot, 40 + i] + list(range(50, 50 + 3 * i)) + [ids.eot, ids.bot], []) for i in range(3)]
    return list(mixed_prompts) + extra


def stop_set(model, prompts, cfg) -> tuple[int, ...]:
    """Stop ids that end the rows at different steps: the tokens greedy decoding writes at steps 2..5 of a few
    rows (found with no extra stop id), so rows stop at mixed lengths."""
    free = rollout(model, prompts, dataclasses.replace(cfg, max_new_tokens=8), fast=False)
    return tuple(sorted({free.row_tokens(r)[2 + r % 4] for r in range(0, free.num_rows, 2)}))


@torch.no_grad()
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lean_step_equals_the_forward(biased, prompts, layout):
    """Left-padded batch with audio: at every step the lean step's logits equal the transformers-cache forward,
    with the matrices as split copies or packed by MKL or oneDNN for the batch's rows."""
    model = biased
    if layout != "split" and not _can_pack(model.lm_head.weight, layout):
        pytest.skip(f"this torch build has no {layout} packed products")
    batch = collate_prompts(prompts, 0)
    out = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens, position_ids=batch.position_ids,
                use_cache=True, logits_to_keep=1)
    kv = StaticKV.allocate(len(prompts), batch.input_ids.shape[1] + 10, model)
    kv.load(list(range(len(prompts))), out.cache, list(range(len(prompts))), batch.attention_mask)
    decoder = FastDecoder(model, rows=len(prompts), layout=layout)
    assert isinstance(decoder.weights[2], _Packed) == (layout != "split")
    cache, mask, pos = out.cache, batch.attention_mask, batch.position_ids[:, -1:]
    token = out.logits[:, -1].argmax(-1)
    for _ in range(8):
        fast = decoder.step(kv, token)
        mask, pos = torch.cat([mask, mask.new_ones(len(prompts), 1)], 1), pos + 1
        ref = model(token[:, None], mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        cache, ref_logits = ref.cache, ref.logits[:, -1].float()
        # float32 sums in another order: ~1e-6 of logits of size ~1
        torch.testing.assert_close(fast, ref_logits, atol=1e-4, rtol=1e-4)
        token = ref_logits.argmax(-1)


@torch.no_grad()
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_packed_matrices_serve_a_step_of_another_height(biased, prompts, layout):
    """A decoder packed for 4 rows run on 6 (MKL multiplies by the kept `[out, in]` matrices, oneDNN by its packed
    ones): the same logits as the split decoder's."""
    model = biased
    if not _can_pack(model.lm_head.weight, layout):
        pytest.skip(f"this torch build has no {layout} packed products")
    batch = collate_prompts(prompts, 0)
    out = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens, position_ids=batch.position_ids,
                use_cache=True, logits_to_keep=1)
    logits = []
    for rows, chosen in ((1, "split"), (4, layout)):
        kv = StaticKV.allocate(len(prompts), batch.input_ids.shape[1] + 4, model)
        kv.load(list(range(len(prompts))), out.cache, list(range(len(prompts))), batch.attention_mask)
        logits.append(FastDecoder(model, rows=rows, layout=chosen).step(kv, out.logits[:, -1].argmax(-1)))
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)


def test_layout_is_chosen_by_cpu_and_rows(model, monkeypatch):
    """Unless told, a decoder of one row keeps split matrices; above one row it packs with oneDNN on an AMD CPU,
    with MKL on an Intel CPU, and keeps split matrices otherwise (measured per CPU, benchmarks/RESULTS.md); a
    library that cannot pack the weights, or a layout that does not exist, is a clear error."""
    weight = model.lm_head.weight
    onednn = "onednn" if _can_pack(weight, "onednn") else "split"
    mkl = "mkl" if _can_pack(weight, "mkl") else "split"
    cases = {"AuthenticAMD": ("split", onednn), "GenuineIntel": ("split", mkl), "": ("split", "split")}
    for vendor, (one_row, four_rows) in cases.items():
        monkeypatch.setattr(fast_module, "_cpu_vendor", lambda vendor=vendor: vendor)
        assert (default_layout(weight, 1), default_layout(weight, 4)) == (one_row, four_rows)
        assert FastDecoder(model, rows=1).layout == one_row
        decoder = FastDecoder(model, rows=4)
        assert decoder.layout == four_rows
        assert isinstance(decoder.weights[2], _Packed) == (four_rows != "split")
    with pytest.raises(ValueError, match="layout='mkl' needs float32"):
        FastDecoder(copy.deepcopy(model).to(torch.bfloat16), rows=4, layout="mkl")
    with pytest.raises(ValueError, match="unknown layout 'packed'"):
        FastDecoder(model, rows=4, layout="packed")


@pytest.mark.parametrize("cfg", [GREEDY, dataclasses.replace(GREEDY, repetition_penalty=1.3)], ids=["plain", "pen"])
def test_greedy_fast_equals_plain_cache(model, prompts, cfg):
    fast = rollout(model, prompts, cfg, num_samples=2)
    plain = rollout(model, prompts, cfg, num_samples=2, fast=False)
    assert torch.equal(fast.response_ids, plain.response_ids)
    assert fast.finish_reasons == plain.finish_reasons
    torch.testing.assert_close(fast.policy_logprobs, plain.policy_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=1e-5, rtol=0)


def test_seeded_one_wave_equals_plain_cache(model, prompts):
    """All rows at once: the same random stream as the plain loop, so the same sampled tokens."""
    cfg = dataclasses.replace(SAMPLED, stop_ids=stop_set(model, prompts, GREEDY))
    fast = rollout(model, prompts, cfg, num_samples=3)
    plain = rollout(model, prompts, cfg, num_samples=3, fast=False)
    assert torch.equal(fast.response_ids, plain.response_ids)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=1e-5, rtol=0)


def test_refill_static_and_one_wave_agree_greedy(model, prompts):
    cfg = dataclasses.replace(GREEDY, stop_ids=stop_set(model, prompts, GREEDY))
    one = rollout(model, prompts, cfg, num_samples=2)
    lengths = set(one.response_lengths.tolist())
    assert len(lengths) >= 3, lengths  # the rows really stop at different steps
    for refill in (True, False):
        some = rollout(model, prompts, cfg, num_samples=2, max_rows=3, refill=refill)
        assert torch.equal(some.response_ids, one.response_ids)
        assert some.finish_reasons == one.finish_reasons
        torch.testing.assert_close(some.policy_logprobs, one.policy_logprobs, atol=1e-5, rtol=0)


def test_refill_runs_fewer_steps_than_static_waves(model, prompts, ids):
    cfg = dataclasses.replace(GREEDY, stop_ids=stop_set(model, prompts, GREEDY))
    kw = dict(num_samples=2, max_new_tokens=cfg.max_new_tokens, stop_ids=resolve_stop_ids(model.config, cfg),
              pad_id=ids.pad, banned=audio_ids(model.config, torch.device("cpu")), max_rows=3)
    static = slot_rollout(model, prompts, cfg, refill=False, **kw)
    refill = slot_rollout(model, prompts, cfg, refill=True, **kw)
    assert torch.equal(static.tokens, refill.tokens)
    useful = int(refill.valid.sum())
    # static: each wave of 3 rows lasts as long as its longest row; refill keeps the 3 slots busy
    waves = refill.valid.sum(1).view(-1, 3).max(1).values.sum() - 4  # minus one admission per wave: 4 waves
    assert static.steps == int(waves)
    assert refill.steps < static.steps
    assert refill.steps >= -(-useful // 3) - 1  # never fewer steps than the work divided over the slots


@pytest.mark.parametrize("refill", [True, False])
def test_reading_the_stops_every_few_steps_changes_no_row(model, prompts, ids, refill):
    """With the host reading which rows ended only every 4th step (as on a GPU), slots decode a few unrecorded
    steps more, and every row is still exactly what a read at every step gives."""
    cfg = dataclasses.replace(GREEDY, stop_ids=stop_set(model, prompts, GREEDY))
    kw = dict(num_samples=2, max_new_tokens=cfg.max_new_tokens, stop_ids=resolve_stop_ids(model.config, cfg),
              pad_id=ids.pad, banned=audio_ids(model.config, torch.device("cpu")), max_rows=3, refill=refill)
    every = slot_rollout(model, prompts, cfg, sync_every=1, **kw)
    fourth = slot_rollout(model, prompts, cfg, sync_every=4, **kw)
    for name in ("tokens", "valid"):
        assert torch.equal(getattr(every, name), getattr(fourth, name))
    torch.testing.assert_close(every.policy_logprobs, fourth.policy_logprobs, atol=1e-5, rtol=0)
    assert every.steps <= fourth.steps


def test_refilled_logprobs_equal_teacher_forced(model, prompts):
    cfg = dataclasses.replace(SAMPLED, stop_ids=stop_set(model, prompts, GREEDY))
    batch = rollout(model, prompts, cfg, num_samples=3, max_rows=4)
    assert len(set(batch.response_lengths.tolist())) > 1
    torch.testing.assert_close(response_logprobs(model, batch), batch.policy_logprobs, atol=1e-5, rtol=0)


def test_seeded_refill_is_reproducible(model, prompts):
    cfg = dataclasses.replace(SAMPLED, stop_ids=stop_set(model, prompts, GREEDY))
    a = rollout(model, prompts, cfg, num_samples=3, max_rows=4)
    b = rollout(model, prompts, cfg, num_samples=3, max_rows=4)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    c = rollout(model, prompts, dataclasses.replace(cfg, seed=6), num_samples=3, max_rows=4)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_budget_and_single_slot(model, prompts):
    """One slot, rows in turn: every row still gets exactly its budget or its stop."""
    cfg = dataclasses.replace(GREEDY, max_new_tokens=5)
    one = rollout(model, prompts[:3], cfg, num_samples=2, max_rows=1)
    ref = rollout(model, prompts[:3], cfg, num_samples=2, fast=False)
    assert torch.equal(one.response_ids, ref.response_ids) and one.finish_reasons == ref.finish_reasons


def test_stream_fast_equals_plain(model, prompts):
    for prompt in prompts[:3]:
        assert list(stream_tokens(model, prompt, GREEDY)) == list(stream_tokens(model, prompt, GREEDY, fast=False))


def test_compiled_step_equals_eager(model, prompts):
    """`torch.compile` of the step (aot_eager: traced by dynamo, fullgraph, no code generation here)."""
    eager = rollout(model, prompts, GREEDY, num_samples=2, max_rows=3)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn
        compiled = rollout(model, prompts, GREEDY, num_samples=2, max_rows=3, compile="aot_eager")
    assert torch.equal(compiled.response_ids, eager.response_ids)


def test_a_failing_compiler_falls_back_with_a_warning(model, prompts):
    eager = rollout(model, prompts[:2], GREEDY)
    with pytest.warns(UserWarning, match="decoding without it"):
        out = rollout(model, prompts[:2], GREEDY, compile="no_such_backend")
    assert torch.equal(out.response_ids, eager.response_ids)


def test_lora_model_falls_back_to_the_forward(model, prompts):
    """A peft-wrapped decoder is not covered: rollouts go through `model(...)`, so the adapters count."""
    import copy

    from mgrd.train.optim import LoraSetup, add_lora

    lora = copy.deepcopy(model)
    add_lora(lora, LoraSetup(rank=4, target_modules=("q_proj", "v_proj")))
    torch.nn.init.normal_(lora.model.layers[0].self_attn.q_proj.lora_B["default"].weight)
    assert supports_fast_path(model) and not supports_fast_path(lora)
    out = rollout(lora, prompts[:3], GREEDY)
    ref = rollout(lora, prompts[:3], GREEDY, fast=False)
    assert torch.equal(out.response_ids, ref.response_ids)
    assert not torch.equal(out.response_ids, rollout(model, prompts[:3], GREEDY).response_ids)


@torch.no_grad()
def test_bf16_model_decodes_like_its_forward(model, prompts):
    """A bf16 model (as on a GPU): the lean step keeps the forward's dtypes (norms in float32, rotary tables cast
    as transformers casts them), so its logits agree with the forward's to bf16 rounding."""
    import copy

    half = copy.deepcopy(model).to(torch.bfloat16)
    half.reset_rotary()
    fast = rollout(half, prompts, GREEDY)
    plain = rollout(half, prompts, GREEDY, fast=False)
    steps = min(int(n) for n in plain.response_lengths)
    # the first token comes from the same prefill; after it, bf16 rounding in another op order: log-probs of size
    # ~5 carry ~2e-2 of rounding (bf16 keeps 8 bits), seen here up to 0.015
    assert torch.equal(fast.response_ids[:, 0], plain.response_ids[:, 0])
    logits = response_logprobs(half, fast)  # teacher-forced log-probs of the fast path's own tokens
    torch.testing.assert_close(fast.policy_logprobs[:, :steps], logits[:, :steps], atol=0.05, rtol=0)
