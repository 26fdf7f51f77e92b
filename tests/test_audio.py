"""Audio front end: formats, resampling, the reference log-mel, chunking, token counts, bad input."""

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


def test_log_mel_matches_reference_fixture():
    expected = load_file(FIXTURE / "expected.safetensors")
    clips = json.loads((FIXTURE / "inputs.json").read_text())["clips"]
    for i, name in enumerate(clips):
        mel = audio.log_mel(audio.load_audio(FIXTURE / "audio" / name))
        assert mel.shape == expected[f"mel_{i}"].shape
        torch.testing.assert_close(mel, expected[f"mel_{i}"], atol=1e-5, rtol=0)


def test_log_mel_80_bins_and_frame_count():
    mel = audio.log_mel(sine(440, 1.0, 16000), n_mels=80)
    assert mel.shape == (80, 102)
    assert float(mel.max() - mel.min()) <= 2.0 + 1e-6  # log10 floored at max - 8, then divided by 4


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


def test_pad_mels():
    mels, lens = audio.pad_mels([torch.ones(128, 5), torch.ones(128, 9)])
    assert mels.shape == (2, 128, 9) and lens.tolist() == [5, 9]
    assert mels[0, :, 5:].abs().sum() == 0
