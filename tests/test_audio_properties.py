"""Front-end arithmetic over its whole domain (hypothesis): frame counts, chunking, tokens per chunk.

`tests/test_audio.py` pins the reference values (golden features, the duration table, resampler quality);
this file checks the rules between them hold for ANY clip length and chunk size: `log_mel` makes exactly
`mel_frame_count(S)` frames with a dynamic range of at most 8 decades (2.0 after scaling), chunks tile the
clip without gaps or overlap, and a longer clip never makes fewer tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrd import audio

PROPERTY = settings(max_examples=80, deadline=None, database=None)
SR = audio.SAMPLE_RATE


@settings(max_examples=25, deadline=None, database=None)
@given(st.integers(1, 3 * SR), st.integers(0, 2**16))
def test_log_mel_frames_and_range_for_any_length(samples, seed):
    wave = np.random.default_rng(seed).standard_normal(samples).astype(np.float32) * 0.1
    mel = audio.log_mel(wave, n_mels=80)
    assert mel.shape == (80, audio.mel_frame_count(samples)) == (80, (samples + 479) // 160)
    assert float(mel.max() - mel.min()) <= 2.0 + 1e-6  # floored at max - 8 decades, divided by 4


@PROPERTY
@given(st.integers(1, 70 * SR), st.floats(0.01, audio.MAX_CHUNK_SECONDS))
def test_chunks_tile_the_clip(samples, seconds):
    wave = np.arange(samples, dtype=np.float32)
    chunks = audio.split_chunks(wave, seconds)
    size = round(seconds * SR)
    assert [len(c) for c in chunks[:-1]] == [size] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= size
    np.testing.assert_array_equal(np.concatenate(chunks), wave)  # no gap, no overlap, in order


@PROPERTY
@given(st.integers(1, 40 * SR))
def test_token_count_per_chunk_is_monotone_and_near_12_5_per_second(samples):
    tokens = audio.tokens_for_samples(samples)
    assert tokens <= audio.tokens_for_samples(samples + 1) <= tokens + 1
    assert abs(tokens - samples / SR * audio.TOKENS_PER_SECOND) <= 2  # 80 ms per token, +-2 at the ends


@pytest.mark.parametrize("rule", ["hf", "vllm"])
def test_both_rules_agree_off_the_residues_mod_8(rule):
    """The hf and vllm counts differ exactly when L mod 8 is 3 or 4, by one token (vllm counts one more)."""
    for frames in range(5, 3001):
        hf, vllm = audio.audio_token_count(frames), audio.audio_token_count(frames, rule="vllm")
        assert vllm - hf == (1 if frames % 8 in (3, 4) else 0), frames
    assert audio.audio_token_count(1002, rule=rule) == 125  # 10 s either way


def test_chunk_shorter_than_a_sample_is_a_clear_error():
    with pytest.raises(ValueError) as err:
        audio.split_chunks(np.zeros(100, dtype=np.float32), 1e-5)
    assert "chunk_seconds" in str(err.value)


# ---------------------------------------------------------------------------------------------- mutmut survivors
# Found by a mutmut 3.8.1 run over audio.py with test_audio.py + this file (see tests/README.md).


def test_only_a_mono_waveform_is_accepted():
    with pytest.raises(audio.AudioError, match="1-D"):
        audio.log_mel(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(audio.AudioError, match="mono"):
        audio.features_for_clip(np.zeros((2, 16000), dtype=np.float32))


def test_chunk_seconds_bounds_are_inclusive_of_the_29_98_s_limit_only():
    wave = np.zeros(SR, dtype=np.float32)
    assert len(audio.split_chunks(wave, audio.MAX_CHUNK_SECONDS)) == 1
    for bad in (0.0, -1.0, audio.MAX_CHUNK_SECONDS + 0.01):
        with pytest.raises(ValueError, match="chunk_seconds must be in"):
            audio.split_chunks(wave, bad)


def test_features_for_clip_honours_its_arguments_and_drops_only_a_short_tail():
    wave = np.full(50 * SR + 100, 0.01, dtype=np.float32)  # two 25 s chunks and a 6 ms tail
    assert [f.shape for f in audio.features_for_clip(wave, n_mels=80)] == [(80, 2502), (80, 2502)]
    assert len(audio.features_for_clip(wave[: 25 * SR], chunk_seconds=10)) == 3
    vllm = lambda frames: audio.audio_token_count(frames, rule="vllm")  # noqa: E731
    assert len(audio.features_for_clip(wave[:1], token_count=vllm)) == 1  # one sample is a vLLM token


def test_pad_mels_lengths_are_int64():
    _, lens = audio.pad_mels([torch.zeros(4, 3), torch.zeros(4, 5)])
    assert lens.dtype == torch.int64 and lens.tolist() == [3, 5]
