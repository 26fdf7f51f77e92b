"""The model: golden parity with the official fixture, batch invariance, placeholders, freezing, presets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mgrd.audio import audio_token_count, load_audio, log_mel, pad_mels
from mgrd.models import (
    AudioPlaceholderError,
    SpecialTokenIds,
    build_model,
    load_pretrained,
    parameter_counts,
    preset_config,
)
from mgrd.models.presets import tiny

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "step_audio2_tiny"  # the golden checkpoint
IDS = SpecialTokenIds(audio_start=5, audio_end=6, audio_patch=7)


@pytest.fixture(scope="module")
def fixture_model():
    return load_pretrained(FIXTURE, special_ids=IDS)


@pytest.fixture(scope="module")
def expected():
    return load_file(FIXTURE / "expected.safetensors")


def fixture_mels():
    clips = json.loads((FIXTURE / "inputs.json").read_text())["clips"]
    return [log_mel(load_audio(FIXTURE / "audio" / c)) for c in clips]


@torch.no_grad()
def test_golden_audio_embeds_and_logits(fixture_model, expected):
    mels = fixture_mels()
    for i, mel in enumerate(mels):  # each clip alone, as the reference encodes it
        emb = fixture_model.encode_audio(*pad_mels([mel]))[0]
        torch.testing.assert_close(emb, expected[f"audio_embeds_{i}"], atol=1e-4, rtol=0)
    out = fixture_model(expected["input_ids"], expected["attention_mask"], *pad_mels(mels))
    keep = expected["attention_mask"].bool()
    torch.testing.assert_close(out.logits[keep], expected["logits"][keep], atol=1e-4, rtol=0)


@torch.no_grad()
def test_golden_embeds_hold_in_a_padded_batch(fixture_model, expected):
    """The reference is not batch-invariant; ours gives the per-clip values inside a batch."""
    embeds = fixture_model.encode_audio(*pad_mels(fixture_mels()))
    for i, emb in enumerate(embeds):
        torch.testing.assert_close(emb, expected[f"audio_embeds_{i}"], atol=1e-4, rtol=0)


def tiny_model(seed=0):
    return build_model(tiny(vocab_size=64, special_ids=SpecialTokenIds(60, 61, 62)), seed=seed).eval()


def random_mels(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(128, n, generator=g) for n in frames]


@torch.no_grad()
def test_encoder_batch_equals_single():
    model = tiny_model()
    mels = random_mels([53, 172, 301, 322, 999, 1000])  # odd and even lengths, long and short
    batch = model.encode_audio(*pad_mels(mels))
    for mel, from_batch in zip(mels, batch):
        alone = model.encode_audio(*pad_mels([mel]))[0]
        assert alone.shape == from_batch.shape
        torch.testing.assert_close(from_batch, alone, atol=1e-5, rtol=1e-5)


def prompt_ids(n_patch: int, prefix: list[int], suffix: list[int]) -> list[int]:
    return prefix + [60] + [62] * n_patch + [61] + suffix


@torch.no_grad()
def test_forward_batch_equals_single():
    model = tiny_model()
    mels = random_mels([172, 322], seed=1)
    rows = [
        prompt_ids(audio_token_count(172), [1, 2, 3], [4, 5]),
        prompt_ids(audio_token_count(322), [7], [8, 9, 10, 11]),
    ]
    width = max(map(len, rows))
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    batch = model(ids, mask, *pad_mels(mels)).logits
    for i, r in enumerate(rows):
        single = model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long), *pad_mels([mels[i]])).logits
        torch.testing.assert_close(batch[i, : len(r)], single[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_placeholder_count_mismatch_is_a_clear_error():
    model = tiny_model()
    mel = random_mels([172])
    ids = torch.tensor([prompt_ids(20, [1], [2])])  # 172 frames encode to 21 tokens
    with pytest.raises(AudioPlaceholderError, match="audio block 0 has 20 <audio_patch> tokens but its chunk encodes to 21"):
        model(ids, None, *pad_mels(mel))
    with pytest.raises(AudioPlaceholderError, match="1 <audio_patch> run"):
        model(ids, None, *pad_mels(random_mels([172, 172])))


def test_encoder_frozen_adapter_and_llm_trained():
    model = tiny_model().train()
    assert not model.encoder.training and model.adapter.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    mel = random_mels([172])
    ids = torch.tensor([prompt_ids(21, [1, 2], [3, 4])])
    loss = model(ids, None, *pad_mels(mel)).logits.logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_preset_parameter_counts_on_meta():
    r1 = parameter_counts(build_model(preset_config("step-audio-r1"), device="meta"))
    assert 32.5e9 < r1["total"] < 34e9  # ~33B, as released
    assert 0.60e9 < r1["encoder"] < 0.66e9 and 17e6 < r1["adapter"] < 19e6
    assert r1["lm_head"] == 158_720 * 5120
    mini = parameter_counts(build_model(preset_config("step-audio-2-mini"), device="meta"))
    assert 7.5e9 < mini["total"] < 9e9
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_tiny_is_tiny():
    counts = parameter_counts(tiny_model())
    assert counts["total"] < 3_000_000
    assert counts["trainable"] == counts["total"] - counts["encoder"]
    np.testing.assert_array_equal(
        tiny_model(seed=3).lm_head.weight.detach().numpy(), tiny_model(seed=3).lm_head.weight.detach().numpy()
    )


@torch.no_grad()
def test_audio_placed_run_by_run_across_rows():
    """Gathered placement == writing each chunk over its run by hand, also when runs touch a row boundary."""
    model = tiny_model()
    mels = random_mels([172, 53, 322], seed=2)
    n = [audio_token_count(m.shape[-1]) for m in mels]
    rows = [[1] + [60] + [62] * n[0] + [61, 2] + [62] * n[1], [62] * n[2] + [61, 3]]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    got = model(ids, None, *pad_mels(mels)).logits
    embeds = model.model.embed_tokens(ids)
    starts = [(0, 2), (0, len(rows[0]) - n[1]), (1, 0)]
    for (row, start), emb in zip(starts, model.encode_audio(*pad_mels(mels))):
        embeds[row, start : start + emb.shape[0]] = emb
    want = model.lm_head(model.model(inputs_embeds=embeds).last_hidden_state)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_run_coordinates_need_no_host_sync():
    """`fullgraph=True` fails on any data-dependent host read (`.tolist()`, `nonzero`, boolean indexing)."""
    from mgrd.models.reasoner import _run_coordinates

    is_patch = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 1]], dtype=torch.bool)
    chunk, offset = torch.compile(_run_coordinates, fullgraph=True, backend="eager")(is_patch)
    assert chunk[is_patch].tolist() == [0, 0, 1, 2, 2, 3]
    assert offset[is_patch].tolist() == [0, 1, 0, 0, 1, 0]
