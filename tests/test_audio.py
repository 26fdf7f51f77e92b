"""Audio front end: formats, resampling, the reference log-mel, chunking, token counts, bad input."""

import functools
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from mgrd import audio
from mgrd.audio import AudioError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "step_audio2_tiny"  # the golden checkpoint


def sine(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize(
    "seconds,frames,tokens",
    [(0.5, 52, 6), (1, 102, 13), (5, 502, 63), (10, 1002, 125), (20, 2002, 250), (25, 2502, 313), (29.98, 3000, 375)],
)
def test_token_count_table(seconds, frames, tokens):
    samples = int(round(seconds * 16000))
    assert audio.mel_frame_count(samples) == frames
    assert audio.audio_token_count(frames) == tokens


def test_token_rules_differ_only_where_l_mod_8_is_3_or_4():
    # The official vLLM server counts on L, the HF code on L - 2 (reference §5): 0.5 s is 7 vs 6 tokens.
    assert audio.mel_frame_count(8000) == 52 and 52 % 8 == 4
    assert (audio.audio_token_count(52), audio.audio_token_count(52, rule="vllm")) == (6, 7)
    assert (audio.audio_token_count(51), audio.audio_token_count(51, rule="vllm")) == (6, 7)  # 0.49 s, L mod 8 = 3
    for seconds, frames, tokens in [(1, 102, 13), (10, 1002, 125), (25, 2502, 313), (29.98, 3000, 375)]:
        assert audio.audio_token_count(frames, rule="vllm") == tokens  # the table's durations agree
    lengths = [audio.mel_frame_count(160 * k) for k in range(2, 2501)]  # 0.02 s to 25 s in 10 ms steps
    assert (lengths[0], lengths[-1], len(lengths)) == (4, 2502, 2499)
    differ = [n for n in lengths if audio.audio_token_count(n) != audio.audio_token_count(n, rule="vllm")]
    assert all(n % 8 in (3, 4) for n in differ)
    assert len(differ) == 625  # 25.0 % of the 2,499 durations (the reference's measurement)
    assert all(audio.audio_token_count(n, rule="vllm") == ((n + 1) // 2 // 2 - 1) // 2 + 1 for n in lengths)


def test_token_count_follows_the_adapter_kernel_and_stride():
    enc = audio.encoder_frames(1002)  # 250 frames at 25 Hz
    assert audio.audio_token_count(1002, kernel_size=3, stride=2) == (250 + 2 - 3) // 2 + 1 == 125
    assert audio.audio_token_count(1002, kernel_size=3, stride=1) == enc == 250
    assert audio.audio_token_count(1002, kernel_size=5, stride=4) == (250 + 2 - 5) // 4 + 1 == 62
    with pytest.raises(ValueError, match="token rule must be one of hf, vllm"):
        audio.audio_token_count(100, rule="official")
    with pytest.raises(ValueError, match="mel_frames must be >= 0"):
        audio.audio_token_count(-1)


# The golden values were computed in float32 by the reference code, so they carry float32 STFT rounding noise
# where the power is tiny: there, a float64 front end (ours) differs from them by up to 5.5e-5. In bins within
# 60 dB of the clip's peak (normalised log-mel >= max - 60/10/4 = max - 1.5) the noise stays below 8.4e-6.
# Hence 1e-5 within 60 dB of the peak and 1e-4 elsewhere; the float64 features themselves do not depend on the CPU.
NEAR_PEAK = 60 / 10 / 4  # 60 dB in normalised log-mel units ((log10 + 4) / 4)


def test_log_mel_matches_reference_fixture():
    expected = load_file(FIXTURE / "expected.safetensors")
    clips = json.loads((FIXTURE / "inputs.json").read_text())["clips"]
    for i, name in enumerate(clips):
        mel, ref = audio.log_mel(audio.load_audio(FIXTURE / "audio" / name)), expected[f"mel_{i}"]
        assert mel.shape == ref.shape and mel.dtype == torch.float32
        near = ref >= ref.max() - NEAR_PEAK
        assert near.any()
        torch.testing.assert_close(mel[near], ref[near], atol=1e-5, rtol=0, msg=f"{name} within 60 dB of peak")
        torch.testing.assert_close(mel, ref, atol=1e-4, rtol=0, msg=f"{name} (low-energy bins)")


def _numpy_log_mel(wave: np.ndarray, n_mels: int = 128) -> np.ndarray:
    """An independent float64 front end (numpy rfft, explicit framing), for checking the torch one."""
    x = np.pad(wave.astype(np.float64), (0, 479))
    x = np.pad(x, (200, 200), mode="reflect")  # center=True
    n_frames = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(n_frames)])[:-1]  # drop the last frame
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = audio.mel_filters(n_mels).numpy() @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0


def test_log_mel_is_the_float64_computation_rounded_to_float32():
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(27_000) / 16_000) + 1e-4 * rng.standard_normal(27_000))
    wave = wave.astype(np.float32)  # a loud tone over a quiet floor: both regimes of the fixture test
    mel = audio.log_mel(wave)
    want = torch.from_numpy(_numpy_log_mel(wave)).to(torch.float32)
    # float32 rounding of values in [-1, 2] is <= 1.2e-7; FFT algorithms differ by ~1e-15 relative in float64.
    torch.testing.assert_close(mel, want, atol=2.5e-7, rtol=0)


def test_log_mel_80_bins_and_frame_count():
    mel = audio.log_mel(sine(440, 1.0, 16000), n_mels=80)
    assert mel.shape == (80, 102)
    # a pure tone spans far more than 80 dB, so the floor max - 8 (in log10, then / 4) is reached exactly
    assert float(mel.max() - mel.min()) == pytest.approx(2.0, abs=1e-6)
    assert (mel <= mel.min() + 1e-6).sum() > mel.numel() // 4


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_formats_decode_to_16k_mono(tmp_path, fmt, ext):
    sr = 44100
    left, right = sine(440, 1.0, sr), sine(1000, 1.0, sr)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, np.stack([left, right], axis=1), sr, format=fmt)
    wave = audio.load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) < 1200  # mp3/ogg encoders add priming samples
    assert abs(peak_hz(wave) - 440) < 5  # first channel, pitch kept by the resampler


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_sample_rates_resample(tmp_path, sr):
    path = tmp_path / "clip.wav"
    sf.write(path, sine(300, 2.0, sr), sr, subtype="PCM_16")
    wave = audio.load_audio(path)
    assert len(wave) == 32000
    assert abs(peak_hz(wave) - 300) < 2


def test_bytes_and_file_object_sources(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, sine(440, 0.5, 16000), 16000)
    from_path = audio.load_audio(path)
    np.testing.assert_array_equal(audio.load_audio(path.read_bytes()), from_path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(audio.load_audio(f), from_path)


def test_bad_inputs(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        audio.load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        audio.load_audio(empty)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="zero samples"):
        audio.load_audio(zero)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    with pytest.raises(AudioError, match="cannot decode audio .*corrupt.wav \\(corrupt or not audio\\)"):
        audio.load_audio(corrupt)
    unsupported = tmp_path / "clip.m4a"
    unsupported.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    with pytest.raises(AudioError, match="unsupported audio format '.m4a'"):
        audio.load_audio(unsupported)
    random_mp3 = tmp_path / "noise.mp3"  # a known ending with bytes that are not audio
    random_mp3.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="corrupt or not audio"):
        audio.load_audio(random_mp3)
    nan = tmp_path / "nan.wav"
    wave = sine(440, 0.5, 16000)
    wave[100] = np.nan
    sf.write(nan, wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        audio.load_audio(nan)
    with pytest.raises(AudioError, match="folder"):
        audio.load_audio(tmp_path)
    with pytest.raises(AudioError, match="empty"):
        audio.load_audio(b"")


def test_chunks_of_long_audio():
    wave = np.zeros(60 * 16000, dtype=np.float32) + 0.01
    chunks = audio.split_chunks(wave)
    assert [len(c) / 16000 for c in chunks] == [25.0, 25.0, 10.0]
    feats = audio.features_for_clip(wave)
    assert [audio.audio_token_count(f.shape[-1]) for f in feats] == [313, 313, 125]


def test_short_tail_dropped_and_too_short_clip_rejected():
    wave = np.full(25 * 16000 + 100, 0.01, dtype=np.float32)  # a 6 ms tail would make an empty block
    assert len(audio.features_for_clip(wave)) == 1
    with pytest.raises(AudioError, match="too short"):
        audio.features_for_clip(np.full(100, 0.01, dtype=np.float32))
    assert audio.tokens_for_samples(audio.min_samples_for_a_token()) == 1


def _stereo_file(tmp_path, sr: int = 16000) -> Path:
    """Left channel a 440 Hz tone, right channel a 1000 Hz tone of three times the level."""
    left, right = sine(440, 1.0, sr), 3 * sine(1000, 1.0, sr) / 2
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    return path


def test_stereo_first_channel_or_mean(tmp_path):
    path = _stereo_file(tmp_path)
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    first, mean = audio.load_audio(path), audio.load_audio(path, channel="mean")
    np.testing.assert_array_equal(first, data[:, 0])
    np.testing.assert_allclose(mean, (data[:, 0] + data[:, 1]) / 2, atol=1e-7, rtol=0)
    assert abs(peak_hz(first) - 440) < 5 and abs(peak_hz(mean) - 1000) < 5  # the louder right channel dominates
    feats_first = audio.features_for_clip(path)
    feats_mean = audio.features_for_clip(path, channel="mean")
    torch.testing.assert_close(feats_mean[0], audio.log_mel(mean))
    assert (feats_first[0] - feats_mean[0]).abs().max() > 0.5
    mono = tmp_path / "mono.wav"
    sf.write(mono, sine(440, 1.0, 16000), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(audio.load_audio(mono, channel="mean"), audio.load_audio(mono))
    with pytest.raises(ValueError, match="channel must be one of first, mean, got 'left'"):
        audio.load_audio(path, channel="left")


def test_pad_mels():
    a, b = torch.randn(128, 5), torch.randn(128, 9)
    mels, lens = audio.pad_mels([a, b])
    assert mels.shape == (2, 128, 9) and lens.tolist() == [5, 9]
    assert torch.equal(mels[0, :, :5], a) and torch.equal(mels[1], b)  # the data itself, in place
    assert mels[0, :, 5:].abs().sum() == 0
    with pytest.raises(ValueError, match="at least one clip"):
        audio.pad_mels([])


@pytest.mark.parametrize("seconds,sizes", [(2.5, [40000, 40000, 20000]), (1.2345, [19752] * 5 + [1240])])
def test_fractional_chunk_lengths(seconds, sizes):
    wave = np.zeros(100_000, dtype=np.float32)
    chunks = audio.split_chunks(wave, seconds)
    assert [len(c) for c in chunks] == sizes  # round(seconds * 16000) samples each, the rest in the tail
    assert sum(sizes) == len(wave)
    with pytest.raises(ValueError, match="chunk_seconds must be in"):
        audio.split_chunks(wave, 30.0)


def test_resampling_removes_what_would_alias():
    # 48 kHz: a 1 kHz tone plus a 12 kHz tone. At 16 kHz (Nyquist 8 kHz) the 12 kHz tone must be filtered out,
    # not folded to 4 kHz (a quick resampler leaves it at about -4 dB; soxr HQ at about -168 dB).
    sr, n = 48_000, 48_000
    t = np.arange(n) / sr
    wave = (0.4 * np.sin(2 * np.pi * 1000 * t) + 0.4 * np.sin(2 * np.pi * 12_000 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="FLOAT")
    out = audio.load_audio(buf.getvalue())
    spec = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    freqs = np.fft.rfftfreq(len(out) - 4000, 1 / 16_000)
    level = lambda f: spec[np.abs(freqs - f) < 20].max()  # noqa: E731
    assert 20 * np.log10(level(4000) / level(1000)) < -100


def test_tail_and_shortest_clip_follow_the_token_rule():
    vllm = functools.partial(audio.audio_token_count, rule="vllm")
    assert audio.min_samples_for_a_token() == 321 and audio.min_samples_for_a_token(rule="vllm") == 1
    wave = np.full(25 * 16000 + 100, 0.01, dtype=np.float32)  # a 6 ms tail: no token under hf, one under vllm
    assert [f.shape[-1] for f in audio.features_for_clip(wave)] == [2502]
    assert [f.shape[-1] for f in audio.features_for_clip(wave, token_count=vllm)] == [2502, 3]
    assert len(audio.features_for_clip(np.full(100, 0.01, dtype=np.float32), token_count=vllm)) == 1
    with pytest.raises(AudioError, match="clip too short: 100 samples; at least 321 \\(20 ms at 16 kHz\\)"):
        audio.features_for_clip(np.full(100, 0.01, dtype=np.float32))
