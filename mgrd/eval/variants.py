"""Audio variants of an item: the clean clip, ablations (silence, noise) and corruptions (SNR, speed).

A variant name is one of:
- `clean`: the item as it is;
- `silence`: every clip replaced by digital silence of the same length (audio ablation: a model that answers
  the same without the sound is not listening);
- `noise`: every clip replaced by white noise of the clip's own RMS and length;
- `snr<dB>` (e.g. `snr10`, `snr-5`): white noise added at that signal-to-noise ratio (RMS over the whole clip);
- `speed<factor>` (e.g. `speed1.25`): played faster (> 1) or slower (< 1), pitch moving with it (resampled);
- `think<N>` (e.g. `think0`, `think64`): the clean audio with the thinking forced closed after N tokens
  (a local model only; `think0` answers without thinking): accuracy against a thinking budget.

Noise is seeded by the item id and the variant, so a rerun hears the same noise. The changed clip goes to the
prompt as in-memory 16 kHz float WAV bytes; nothing is written next to the data.
"""

from __future__ import annotations

import io
import re
import zlib

import numpy as np
import soundfile as sf
import soxr

from mgrd.audio import SAMPLE_RATE, load_audio

_SNR = re.compile(r"^snr(-?\d+(?:\.\d+)?)$")
_SPEED = re.compile(r"^speed(\d+(?:\.\d+)?)$")
_THINK = re.compile(r"^think(\d+)$")
ABLATIONS = ("silence", "noise")


def check_variant(name: str) -> str:
    """`name` if it is a known variant; a ValueError that lists the forms otherwise."""
    if name in ("clean", *ABLATIONS) or _SNR.match(name) or _THINK.match(name):
        return name
    speed = _SPEED.match(name)
    if speed and 0.25 <= float(speed.group(1)) <= 4:
        return name
    raise ValueError(f"unknown audio variant {name!r}; use clean, silence, noise, snr<dB> (snr10) or "
                     "speed<factor> in [0.25, 4] (speed1.25) or think<N> (think64)")


def think_budget(variant: str) -> int | None:
    """The forced thinking budget of a `think<N>` variant, else None."""
    match = _THINK.match(variant)
    return int(match.group(1)) if match else None


def transform(wave: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """`[S]` float32 at 16 kHz -> the variant's waveform (`[S]`, or `[S / factor]` for a speed change)."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if variant == "clean":
        return wave
    if variant == "silence":
        return np.zeros_like(wave)
    if variant == "noise":
        return (rng.standard_normal(wave.size) * rms).astype(np.float32)
    snr = _SNR.match(variant)
    if snr:
        noise_rms = rms / 10 ** (float(snr.group(1)) / 20)
        return (wave + rng.standard_normal(wave.size) * noise_rms).astype(np.float32)
    factor = float(_SPEED.match(check_variant(variant)).group(1))
    return soxr.resample(wave, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    """Float WAV bytes at 16 kHz (no quantisation of the corrupted signal)."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def apply(row: dict, variant: str) -> dict:
    """A copy of a prompt row whose clips are replaced by their `variant` (the row itself for `clean`)."""
    if check_variant(variant) == "clean" or think_budget(variant) is not None or not row.get("audio"):
        return row
    seed = zlib.crc32(f"{row.get('id')}|{variant}".encode())
    rng = np.random.default_rng(seed)
    clips = [wav_bytes(transform(load_audio(src if isinstance(src, bytes) else str(src)), variant, rng))
             for src in row["audio"]]
    return dict(row, audio=clips)
