"""Audio front end: decode, resample to 16 kHz, log-mel features, and the audio lengths of every stage.

Reproduces the Step-Audio 2 / Step-Audio-R1 reference front end (see `shared/reference/step-audio-r1.md` §5):
first channel (or the channel mean, as the official vLLM server does), 16 kHz, 479-sample right pad, STFT
400/160 with a Hann window, drop the last frame, power, Slaney mel filters, log10 clamp 1e-10, max - 8,
(x + 4) / 4. The features are computed in float64 and cast to float32 at the end, so they agree across CPUs
(vector units) to float32 rounding; the reference computes in float32, whose STFT noise in low-energy bins is
up to ~5e-5.

It splits long audio into <= 25 s chunks (one `<audio_start>...<audio_end>` block each) and owns the length
arithmetic from mel frames to audio tokens, under either rule the official code uses (`TOKEN_RULES`); the
encoder, the adapter and the chat encoder all take their lengths from here. No model code, no prompt building.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
RIGHT_PAD = 479  # samples of zeros appended before the STFT (reference front end)
CHUNK_SECONDS = 25.0  # the official clients cut audio into 25 s chunks
MAX_CHUNK_SECONDS = 29.98  # 1500 encoder positions cover 29.98 s
TOKENS_PER_SECOND = 12.5
CHANNEL_MODES = ("first", "mean")  # HF path / transformers client: channel 0; official vLLM server: the mean
# How many audio tokens a chunk of L mel frames becomes, and which conv2 frames a lone clip attends to:
#   "hf":   the Hugging Face modeling code / utils.py (the golden fixture): the encoder sees `L - 2` frames;
#   "vllm": the official vLLM server: the encoder sees all L frames (reference §5, "Confirmed (2026-12)").
TOKEN_RULES = ("hf", "vllm")

# File endings libsndfile decodes (wav, flac, ogg/opus, mp3 and their relatives).
DECODABLE_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"}
AudioSource = Union[str, os.PathLike, bytes, io.IOBase]


class AudioError(ValueError):
    """A clip that cannot be used: missing, undecodable, empty or non-finite."""


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE, *, channel: str = "first") -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3) to mono float32 at `sample_rate`.

    Args:
        source: a path, the file's bytes, or a binary file object.
        sample_rate: the rate to resample to (soxr, high quality).
        channel: "first" (channel 0, the HF path and the fixture) or "mean" (the average of all channels, as
            the official vLLM server's `librosa.load(mono=True)`). The same for a mono file.
    Returns:
        `[S]` float32 samples, in [-1, 1] for integer formats.
    Raises:
        AudioError: missing file, undecodable or unsupported bytes, zero samples, NaN/inf samples.
        ValueError: an unknown `channel`.
    """
    if channel not in CHANNEL_MODES:
        raise ValueError(f"channel must be one of {', '.join(CHANNEL_MODES)}, got {channel!r}")
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"audio file not found: {path}")
        if path.is_dir():
            raise AudioError(f"audio path is a folder, not a file: {path}")
        if path.stat().st_size == 0:
            raise AudioError(f"audio file is empty (0 bytes): {path}")
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError("audio bytes are empty")
        source = io.BytesIO(source)
    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, EOFError) as err:
        suffix = Path(name).suffix.lower() if isinstance(source, (str, os.PathLike)) else ""
        if suffix and suffix not in DECODABLE_SUFFIXES:
            raise AudioError(f"unsupported audio format {suffix!r}: {name}. Supported formats: wav, flac, ogg, mp3") from None
        reason = str(err).rstrip(". ")
        raise AudioError(f"cannot decode audio {name} (corrupt or not audio): {reason}. Supported formats: wav, flac, ogg, mp3") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio {name} has zero samples")
    if channel == "first" or data.shape[1] == 1:
        wave = np.ascontiguousarray(data[:, 0])
    else:  # the mean in float64, so it does not depend on the summation order
        wave = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.isfinite(wave).all():
        raise AudioError(f"audio {name} contains NaN or infinite samples")
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate, quality="HQ").astype(np.float32)
    return wave


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """Slaney-normalised mel filterbank, `[n_mels, N_FFT // 2 + 1]` float64 (equals librosa's defaults)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(fb, dtype=np.float64).T.copy())


def log_mel(wave: np.ndarray | torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Reference log-mel features of a 16 kHz clip.

    Args:
        wave: `[S]` float samples at 16 kHz, S >= 1.
        n_mels: 128 (Step-Audio 2 / R1) or 80.
    Returns:
        `[n_mels, L]` float32 with `L = mel_frame_count(S)`, computed in float64 throughout.
    """
    x = torch.as_tensor(wave).to(torch.float64)
    if x.ndim != 1 or x.numel() == 0:
        raise AudioError(f"log_mel expects a non-empty 1-D waveform, got shape {tuple(x.shape)}")
    x = torch.nn.functional.pad(x, (0, RIGHT_PAD))
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # drop the last frame
    mel = mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).to(torch.float32)


def mel_frame_count(num_samples: int) -> int:
    """Mel frames for `num_samples` samples at 16 kHz: `(S + 479) // 160` (100 frames per second)."""
    return (num_samples + RIGHT_PAD) // HOP_LENGTH


def _check_rule(rule: str) -> None:
    if rule not in TOKEN_RULES:
        raise ValueError(f"token rule must be one of {', '.join(TOKEN_RULES)}, got {rule!r}")


def conv_frames(mel_frames, rule: str = "hf"):
    """Conv2 frames (50 Hz) a lone chunk attends to and keeps.

    "hf": the encoder is told `L - 2` frames, so `(L - 2 + 1) // 2`; "vllm": it is told L, so `(L + 1) // 2`,
    every frame conv2 makes. Works on ints and on integer tensors `[N]`.
    """
    _check_rule(rule)
    return (mel_frames - 1) // 2 if rule == "hf" else (mel_frames + 1) // 2


def encoder_frames(mel_frames, rule: str = "hf"):
    """Encoder output frames (25 Hz, after the 2x average pool) of a chunk: `conv_frames(L, rule) // 2`."""
    return conv_frames(mel_frames, rule) // 2


def adapter_frames(enc_frames, kernel_size: int = 3, stride: int = 2):
    """Adapter output frames of `enc_frames` encoder frames: its conv's `(n + 2p - k) // s + 1` with p = 1."""
    return (enc_frames + 2 - kernel_size) // stride + 1


def audio_token_count(mel_frames: int, *, rule: str = "hf", kernel_size: int = 3, stride: int = 2) -> int:
    """Audio tokens (`<audio_patch>` slots) one chunk of `mel_frames` frames becomes.

    Encoder (conv2 stride 2, 2x average pool; `encoder_frames`), then the adapter conv (`adapter_frames`).
    "hf": 10 s -> 1002 frames -> 125 tokens (12.5 tokens per second). "vllm" counts
    `((L + 1) // 2 // 2 - 1) // 2 + 1`: one more token when `L mod 8` is 3 or 4 (0.5 s: 7 instead of 6).

    Args:
        mel_frames: L, the chunk's mel frames (`mel_frame_count`).
        rule: "hf" or "vllm" (see `TOKEN_RULES`); a model's comes from `AudioEncoderConfig.token_rule`.
        kernel_size, stride: the adapter conv's (`AudioEncoderConfig.kernel_size` / `adapter_stride`).
    Raises:
        ValueError: a negative frame count or an unknown rule.
    """
    if mel_frames < 0:
        raise ValueError(f"mel_frames must be >= 0, got {mel_frames}")
    return max(0, int(adapter_frames(encoder_frames(mel_frames, rule), kernel_size, stride)))


def tokens_for_samples(num_samples: int, **rule) -> int:
    """Audio tokens for one chunk of `num_samples` samples at 16 kHz (`rule`: as `audio_token_count`)."""
    return audio_token_count(mel_frame_count(num_samples), **rule)


def min_samples_for_a_token(**rule) -> int:
    """Fewest samples a chunk needs to make at least one audio token (321 samples, 20 ms, under the "hf" rule;
    one sample under "vllm")."""
    n = 1
    while tokens_for_samples(n, **rule) < 1:
        n += 1
    return n


def split_chunks(wave: np.ndarray, chunk_seconds: float = CHUNK_SECONDS) -> list[np.ndarray]:
    """Cut a clip into consecutive chunks of at most `chunk_seconds` (no overlap), as the official clients do."""
    if chunk_seconds <= 0 or chunk_seconds > MAX_CHUNK_SECONDS:
        raise ValueError(f"chunk_seconds must be in (0, {MAX_CHUNK_SECONDS}], got {chunk_seconds}")
    size = int(round(chunk_seconds * SAMPLE_RATE))
    if size < 1:
        raise ValueError(f"chunk_seconds must be at least one sample (1/{SAMPLE_RATE} s), got {chunk_seconds}")
    return [wave[i : i + size] for i in range(0, len(wave), size)]


def pad_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of `[n_mels, L_i]` features with zeros.

    Returns:
        mels `[N, n_mels, L_max]` and lengths `[N]` (int64).
    """
    if not mels:
        raise ValueError("pad_mels needs at least one clip")
    lengths = torch.tensor([m.shape[-1] for m in mels], dtype=torch.long)
    out = mels[0].new_zeros(len(mels), mels[0].shape[0], int(lengths.max()))
    for i, m in enumerate(mels):
        out[i, :, : m.shape[-1]] = m
    return out, lengths


def features_for_clip(
    source: AudioSource | np.ndarray,
    n_mels: int = 128,
    chunk_seconds: float = CHUNK_SECONDS,
    *,
    channel: str = "first",
    token_count: Callable[[int], int] = audio_token_count,
) -> list[torch.Tensor]:
    """Load (if needed), chunk and featurise one clip: a list of `[n_mels, L]` tensors, one per chunk.

    Args:
        source: a path, file bytes or file object (decoded with `load_audio(..., channel=channel)`), or `[S]`
            float samples at 16 kHz.
        n_mels: mel bins; chunk_seconds: the longest chunk; channel: "first" or "mean" for multi-channel files.
        token_count: tokens per chunk of L mel frames, the model's (`AudioEncoderConfig.token_count`); a tail
            chunk that makes none is dropped (under the "hf" rule: under 20 ms).
    Raises:
        AudioError: an unusable clip, or one too short for a single audio token.
    """
    wave = source if isinstance(source, np.ndarray) else load_audio(source, channel=channel)
    if wave.ndim != 1 or wave.size == 0:
        raise AudioError(f"expected a non-empty mono waveform, got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise AudioError("waveform contains NaN or infinite samples")
    chunks = split_chunks(wave, chunk_seconds)
    if len(chunks) > 1 and token_count(mel_frame_count(len(chunks[-1]))) < 1:
        chunks = chunks[:-1]  # the tail would make an empty audio block
    if token_count(mel_frame_count(len(chunks[0]))) < 1:
        shortest = next(n for n in range(1, SAMPLE_RATE) if token_count(mel_frame_count(n)) >= 1)
        raise AudioError(
            f"clip too short: {len(wave)} samples; at least {shortest} ({1000 * shortest / SAMPLE_RATE:.0f} ms at "
            "16 kHz) are needed for one audio token"
        )
    return [log_mel(chunk, n_mels) for chunk in chunks]
