"""Logit processors and decoding invariants over their domains: top-k, top-p, repetition penalty, KV cache.

Pins the edges a hand-picked table missed: top-k = 1 is a filter (not "off"), top-p keeps a token whose
predecessors hold exactly the requested mass no longer, the repetition penalty never counts left padding
as a seen token (so a prompt decodes the same in a batch and alone), and cached decoding equals full
recomputation for every prompt length. Property tests use hypothesis with a small budget; the model is the
tiny preset with random weights (these are invariants, not quality checks).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from mgrd.audio import audio_token_count
from mgrd.generate import Prompt, SamplingConfig, apply_top_k, apply_top_p, generate, process_logits
from mgrd.models import build_model
from mgrd.models.presets import tiny

PROPERTY = settings(max_examples=60, deadline=None, database=None)
# model runs: few examples, and no shrinking (a failing case is already small; shrinking costs minutes)
FEW = settings(max_examples=5, deadline=None, database=None, phases=(Phase.explicit, Phase.generate))


def finite(row: torch.Tensor) -> list[bool]:
    return (~torch.isinf(row)).tolist()


def distinct_logits(width: int) -> st.SearchStrategy[torch.Tensor]:
    """`[1, width]` logits without ties (a permutation of spaced values, so the ranking is unambiguous)."""
    return st.permutations(range(width)).map(lambda p: torch.tensor([p], dtype=torch.float32) * 0.37 - 3.0)


# --------------------------------------------------------------------------------------------- top-k


def test_top_k_one_keeps_only_the_argmax():
    """Kills `k <= 0` -> `k <= 1` (top-k = 1 treated as off)."""
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9]])
    assert finite(apply_top_k(logits, 1)[0]) == [False, True, False, False]
    cfg = SamplingConfig(top_k=1)
    nothing_seen = torch.zeros_like(logits, dtype=torch.bool)
    assert finite(process_logits(logits, nothing_seen, cfg)[0]) == [False, True, False, False]


@PROPERTY
@given(st.integers(2, 12).flatmap(lambda v: st.tuples(distinct_logits(v), st.integers(1, v))))
def test_top_k_keeps_exactly_the_k_largest(case):
    logits, k = case
    kept = finite(apply_top_k(logits, k)[0])
    assert sum(kept) == k
    assert all(kept[i] for i in logits[0].argsort(descending=True)[:k].tolist())


# --------------------------------------------------------------------------------------------- top-p


def test_top_p_boundary_at_exact_mass():
    """Kills `mass_before >= p` -> `> p`: a token whose predecessors hold exactly p is dropped.

    Four equal logits give probabilities of exactly 0.25 (powers of two: no rounding), so the mass before the
    k-th token is exactly 0.25 (k - 1).
    """
    logits = torch.zeros(1, 4)
    assert [sum(finite(apply_top_p(logits, p)[0])) for p in (0.25, 0.5, 0.75)] == [1, 2, 3]
    assert [sum(finite(apply_top_p(logits, p)[0])) for p in (0.2500001, 0.5000001, 0.7500001)] == [2, 3, 4]


@PROPERTY
@given(st.integers(2, 10).flatmap(distinct_logits), st.floats(0.01, 0.99))
def test_top_p_keeps_the_smallest_prefix_reaching_p(logits, p):
    kept = torch.tensor(finite(apply_top_p(logits, p)[0]))
    probs = logits[0].softmax(-1)
    assert bool(kept[probs.argmax()])  # the most likely token always stays
    if not kept.all():
        assert probs[~kept].max() <= probs[kept].min()  # a prefix of the ranking
    mass = float(probs[kept].sum())
    assert mass >= p - 1e-6  # reaches p ...
    assert mass - float(probs[kept].min()) < p + 1e-6  # ... and without its last token it would not


# --------------------------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=0).eval()


def text_prompt(tok, text: str) -> Prompt:
    return Prompt(input_ids=tok(text, add_special_tokens=False)["input_ids"])


def tokens(completions) -> list[list[int]]:
    return [c.token_ids for row in completions for c in row]


TEXTS = ["hi", "Which of the two tones is higher, the first or the second one?", "Count the beeps."]


@pytest.mark.parametrize("penalty", [1.3, 0.05])
def test_repetition_penalty_batch_equals_single_with_left_padding(model, tok, penalty):
    """Kills counting left padding as seen tokens: padded rows would penalise (or, below 1, favour) the fill id.

    One long prompt pads five one-token prompts; with few seen tokens per short row, a fill id wrongly
    marked seen changes a greedy pick in some row whichever id the fill is.
    """
    prompts = [text_prompt(tok, TEXTS[1])] + [Prompt(input_ids=[i]) for i in range(40, 440, 80)]
    cfg = SamplingConfig(max_new_tokens=5, temperature=0, repetition_penalty=penalty)
    batch = tokens(generate(model, prompts, cfg))
    alone = [tokens(generate(model, [p], cfg))[0] for p in prompts]
    assert batch == alone


def test_sampling_with_top_k_one_is_greedy(model, tok):
    prompts = [text_prompt(tok, t) for t in TEXTS]
    greedy = tokens(generate(model, prompts, SamplingConfig(max_new_tokens=8, temperature=0)))
    for seed in range(3):
        cfg = SamplingConfig(max_new_tokens=8, temperature=1.5, top_k=1, seed=seed)
        assert tokens(generate(model, prompts, cfg)) == greedy


@FEW
@given(st.lists(st.integers(1, 96), min_size=1, max_size=3), st.integers(0, 2**16))
def test_cache_equals_no_cache_over_prompt_lengths(model, lengths, seed):
    """Greedy decoding with the KV cache equals full recomputation (tokens and log-probs), any prompt lengths."""
    g = torch.Generator().manual_seed(seed)
    prompts = [Prompt(input_ids=torch.randint(0, 500, (n,), generator=g).tolist()) for n in lengths]
    cfg = SamplingConfig(max_new_tokens=5, temperature=0)
    cached, full = generate(model, prompts, cfg), generate(model, prompts, cfg, use_cache=False)
    assert tokens(cached) == tokens(full)
    lp = lambda out: torch.tensor([x for row in out for c in row for x in c.logprobs])  # noqa: E731
    torch.testing.assert_close(lp(cached), lp(full), atol=1e-4, rtol=0)  # float32 sums in a different order


def audio_prompt(ids, frames: list[int], text: list[int], seed: int) -> Prompt:
    """A prompt with one audio block per entry of `frames` (random features), then `text` ids."""
    g = torch.Generator().manual_seed(seed)
    mels = [torch.randn(128, n, generator=g) for n in frames]
    blocks = [i for n in frames for i in [ids.audio_start] + [ids.audio_patch] * audio_token_count(n) + [ids.audio_end]]
    return Prompt(input_ids=[ids.bot, 30, 31] + blocks + text, mels=mels)


def test_audio_prompts_cache_no_cache_batch_and_single_agree(model, ids):
    """Audio blocks at residues 3, 4, 5 and 0 of L mod 8 (two in one prompt), prompts of different lengths, K = 2."""
    lengths = [[51], [100, 208], [165]]
    prompts = [audio_prompt(ids, n, list(range(40, 40 + 3 * i)), seed=i) for i, n in enumerate(lengths)]
    prompts.append(Prompt(input_ids=[ids.bot, 7, 8, 9]))
    cfg = SamplingConfig(max_new_tokens=3, temperature=0)
    cached = generate(model, prompts, cfg, num_samples=2)
    assert tokens(cached) == tokens(generate(model, prompts, cfg, num_samples=2, use_cache=False))
    for i, p in enumerate(prompts):
        alone = generate(model, [p], cfg, num_samples=2)[0]
        assert [c.token_ids for c in alone] == [c.token_ids for c in cached[i]]
        torch.testing.assert_close(torch.tensor([c.logprobs for c in alone]),
                                   torch.tensor([c.logprobs for c in cached[i]]), atol=1e-4, rtol=0)
