"""Waveform building blocks for the synthetic acoustic suite.

Tones of four timbres (and square/sawtooth spectra with random harmonic phases), envelopes and gain ramps,
beeps and chords, sequences on a silent canvas, background noise (white, pink and babble-like), mixing at a
signal-to-noise ratio and the SNR of a clip's least audible sound, speed change by resampling, the crest
factor and a swell that raises it to a drawn value, and peak normalisation. Everything is vectorised numpy at
16 kHz and returns float32; randomness only ever comes from a `numpy.random.Generator` passed in, so a seeded
caller gets identical samples every time.

This module knows nothing about questions, answers or files; the families in `acoustic.py` and
`compositional.py` compose these blocks, and the writer puts the result on disk.
"""

from __future__ import annotations

import functools

import numpy as np
import soxr

from mgrd.data.synth.base import SAMPLE_RATE

TIMBRES = ("sine", "square", "sawtooth", "noise")
NOISE_KINDS = ("white", "pink", "babble")

# Every timbre is scaled to this RMS, so loudness never gives the timbre (or the pitch) away.
_UNIT_RMS = 0.3
_WAVETABLE = 4096  # samples per period in `harmonic_tone` (harmonics up to 2047, far above 8 kHz / 150 Hz)
_PHASE_DRAWS = 8  # `harmonic_tone` keeps the least peaky of this many random phase sets


def n_samples(seconds: float) -> int:
    """Number of samples in `seconds` at 16 kHz (rounded to the nearest sample)."""
    return max(int(round(seconds * SAMPLE_RATE)), 0)


def silence(seconds: float) -> np.ndarray:
    """`[S]` zeros lasting `seconds`."""
    return np.zeros(n_samples(seconds), dtype=np.float32)


def db_to_amp(db: float | np.ndarray) -> float | np.ndarray:
    """Amplitude factor for a level change in decibels."""
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def rms(x: np.ndarray) -> float:
    """Root-mean-square level of a waveform (0 for an empty one)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def tone(freq_hz: float, seconds: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    """A steady tone at a fixed RMS.

    Args:
        freq_hz: the fundamental frequency (ignored for "noise").
        seconds: the length.
        timbre: one of `TIMBRES`. Square and sawtooth are the plain (non band-limited) shapes: their
            harmonics fall as 1/k (odd only for the square), which is what the timbre task listens for.
            "noise" is uniform white noise.
        rng: source of the random start phase, and of the samples for "noise".
    Returns:
        `[S]` float32.
    """
    n = n_samples(seconds)
    if timbre == "noise":
        # Uniform samples: white like Gaussian noise (independent samples), but bounded, so its crest factor
        # (sqrt 3) sits among the tones' (1 square, sqrt 2 sine, sqrt 3 sawtooth) instead of far above them.
        wave = rng.uniform(-1.0, 1.0, n)
    else:
        # Phase in cycles, kept in float64 so long clips stay in tune, then reduced to [0, 1).
        cycles = np.arange(n) * (freq_hz / SAMPLE_RATE) + rng.random()
        frac = cycles - np.floor(cycles)
        if timbre == "sine":
            wave = np.sin(2.0 * np.pi * frac)
        elif timbre == "square":
            wave = np.where(frac < 0.5, 1.0, -1.0)
        elif timbre == "sawtooth":
            wave = 2.0 * frac - 1.0
        else:
            raise ValueError(f"unknown timbre {timbre!r}; expected one of {', '.join(TIMBRES)}")
    level = rms(wave)
    return (wave * (_UNIT_RMS / level if level > 0 else 0.0)).astype(np.float32)


def harmonic_tone(freq_hz: float, seconds: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    """A square or sawtooth spectrum with random harmonic phases, at the unit RMS.

    The harmonics up to 8 kHz fall as 1/k (odd ones only for "square"), as in `tone`, but each starts at its
    own random phase, so the waveform is not the plain shape: the spectrum, which is what the timbre is
    heard by, stays, while the crest factor (peak over RMS) no longer identifies the timbre. Of eight random
    phase sets the least peaky is kept (crest factors of about 4-6 dB, near a sine's 3 dB).

    Args:
        freq_hz: the fundamental frequency.
        seconds: the length.
        timbre: "square" or "sawtooth".
        rng: source of the phases and the start phase.
    Returns:
        `[S]` float32.
    """
    if timbre not in ("square", "sawtooth"):
        raise ValueError(f"harmonic_tone makes square or sawtooth spectra, not {timbre!r}")
    k = np.arange(1, int(SAMPLE_RATE / 2 // freq_hz) + 1)
    amplitudes = np.where((k % 2 == 1) | (timbre == "sawtooth"), 1.0 / k, 0.0)
    size = _WAVETABLE
    spectrum = np.zeros((_PHASE_DRAWS, size // 2 + 1), dtype=np.complex128)
    spectrum[:, k] = amplitudes * np.exp(2j * np.pi * rng.random((_PHASE_DRAWS, k.size)))
    periods = np.fft.irfft(spectrum, size)  # one period of the waveform per phase draw
    period = periods[np.argmin(np.max(np.abs(periods), axis=1))]  # the least peaky: all sit near a sine's
    cycles = np.arange(n_samples(seconds)) * (freq_hz / SAMPLE_RATE) + rng.random()
    wave = np.interp((cycles - np.floor(cycles)) * size, np.arange(size + 1), np.append(period, period[0]))
    level = rms(wave)
    return (wave * (_UNIT_RMS / level if level > 0 else 0.0)).astype(np.float32)


def envelope(n: int, attack_s: float = 0.01, release_s: float = 0.01) -> np.ndarray:
    """`[n]` linear fade-in / fade-out gain, 1 in between; avoids clicks at note edges."""
    idx = np.arange(n, dtype=np.float64)
    rise = (idx + 1) / max(n_samples(attack_s), 1)
    fall = (n - idx) / max(n_samples(release_s), 1)
    return np.minimum(1.0, np.minimum(rise, fall)).astype(np.float32)


def gain_ramp(n: int, start_db: float, end_db: float) -> np.ndarray:
    """`[n]` amplitude curve moving linearly in decibels from `start_db` to `end_db`."""
    return db_to_amp(np.linspace(start_db, end_db, n)).astype(np.float32)


def note(freq_hz: float, seconds: float, timbre: str, rng: np.random.Generator, gain_db: float = 0.0) -> np.ndarray:
    """A tone with soft edges at a level of `gain_db` relative to the unit RMS."""
    wave = tone(freq_hz, seconds, timbre, rng)
    return wave * envelope(wave.size) * np.float32(db_to_amp(gain_db))


def chord(freqs_hz: list[float], seconds: float, rng: np.random.Generator, timbre: str = "sine") -> np.ndarray:
    """Simultaneous notes (equal level, independent phases), with soft edges."""
    wave = sum(tone(f, seconds, timbre, rng) for f in freqs_hz) / len(freqs_hz)
    return (wave * envelope(wave.size, 0.02, 0.05)).astype(np.float32)


def place(events: list[tuple[float, np.ndarray]], seconds: float) -> np.ndarray:
    """Mix sounds onto a silent canvas.

    Args:
        events: `(start_s, wave)` pairs; a wave running past the end is cut.
        seconds: the canvas length.
    Returns:
        `[S]` float32, the sum of the placed waves.
    """
    canvas = silence(seconds)
    for start_s, wave in events:
        i = n_samples(start_s)
        part = wave[: max(canvas.size - i, 0)]
        canvas[i : i + part.size] += part
    return canvas


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """`[n]` Gaussian white noise at unit RMS."""
    return rng.standard_normal(n, dtype=np.float32)


def _fast_len(n: int) -> int:
    """The next power of two >= n: FFT sizes that never hit a slow prime-length transform."""
    return 1 << max(int(n) - 1, 1).bit_length()


def _shaped_noise(n: int, rng: np.random.Generator, gains: np.ndarray) -> np.ndarray:
    """White noise filtered by magnitude responses on the rfft bins of `_fast_len(n)`.

    Args:
        gains: `[F]` or `[V, F]` responses, F = `_fast_len(n) // 2 + 1`.
    Returns:
        `[n]` or `[V, n]` float64, each row at unit RMS (the noise is stationary, so cutting the padded
        transform back to n samples is harmless).
    """
    size = _fast_len(n)
    gains = np.atleast_2d(gains)
    waves = np.fft.irfft(np.fft.rfft(rng.standard_normal((gains.shape[0], size))) * gains, size)[:, :n]
    waves /= np.maximum(np.sqrt(np.mean(waves**2, axis=1, keepdims=True)), 1e-12)
    return waves[0] if waves.shape[0] == 1 else waves


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """`[n]` noise with a 1/f power spectrum (equal energy per octave) at unit RMS."""
    freqs = np.fft.rfftfreq(_fast_len(n), 1.0 / SAMPLE_RATE)
    return _shaped_noise(n, rng, 1.0 / np.sqrt(np.maximum(freqs, 20.0))).astype(np.float32)


def _formant_response(freqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random vowel-like magnitude response: three resonances in the usual F1/F2/F3 ranges."""
    centres = (rng.uniform(300, 900), rng.uniform(900, 2400), rng.uniform(2400, 3400))
    widths = (rng.uniform(80, 160), rng.uniform(100, 220), rng.uniform(150, 300))
    gains = (1.0, rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.5))
    response = np.zeros_like(freqs)
    for c, w, g in zip(centres, widths, gains):
        response += g * np.exp(-0.5 * ((freqs - c) / w) ** 2)
    return response


TALKERS, TALKER_SECONDS, TALKER_SEED = 24, 8.0, 1234


@functools.lru_cache(maxsize=1)
def talker_bank() -> np.ndarray:
    """`[TALKERS, S]` float32 "talkers": white noise through random three-formant responses, unit RMS each.

    Made once per process from a fixed seed (the pool of talkers is part of what babble means here, as a
    babble corpus has a fixed set of speakers); items draw which talkers speak, from where, and when.
    """
    rng = np.random.default_rng(TALKER_SEED)
    n = n_samples(TALKER_SECONDS)
    freqs = np.fft.rfftfreq(_fast_len(n), 1.0 / SAMPLE_RATE)
    responses = np.stack([_formant_response(freqs, rng) for _ in range(TALKERS)])
    return _shaped_noise(n, rng, responses).astype(np.float32)


def babble_noise(n: int, rng: np.random.Generator, voices: int | None = None) -> np.ndarray:
    """`[n]` babble-like noise at unit RMS: several talkers made of formant-filtered, syllable-modulated noise.

    Four to eight talkers from `talker_bank()` (each read from a random offset, wrapping around) are
    switched on and off by their own 3-6 Hz syllable envelopes and summed. It has speech's spectrum and
    rhythm without any words, which is what babble masking needs.
    """
    bank = talker_bank()
    if n > bank.shape[1]:  # longer than the bank: loop it
        bank = np.tile(bank, (1, -(-n // bank.shape[1])))
    voices = int(rng.integers(4, 9)) if voices is None else voices
    picks = rng.choice(bank.shape[0], size=voices, replace=False)
    offsets = rng.integers(0, bank.shape[1] - n + 1, size=voices)
    rates, phases = rng.uniform(3.0, 6.0, voices), rng.uniform(0, 2 * np.pi, voices)
    gains = rng.uniform(0.5, 1.0, voices)
    # Syllable envelopes vary slowly: compute them every 5 ms and interpolate.
    t, coarse = np.arange(n) / SAMPLE_RATE, np.arange(0.0, n / SAMPLE_RATE + 0.01, 0.005)
    total = np.zeros(n, dtype=np.float32)
    for pick, offset, rate, phase, gain in zip(picks, offsets, rates, phases, gains):
        syllables = np.sqrt(np.clip(np.sin(2 * np.pi * rate * coarse + phase), 0.0, None)) * gain
        total += bank[pick, offset : offset + n] * np.interp(t, coarse, syllables).astype(np.float32)
    return (total / max(rms(total), 1e-12)).astype(np.float32)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`[n]` noise of one of `NOISE_KINDS` at unit RMS."""
    makers = {"white": white_noise, "pink": pink_noise, "babble": babble_noise}
    if kind not in makers:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    return makers[kind](n, rng)


def mix_at_snr(signal: np.ndarray, noise_wave: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `noise_wave` scaled so that signal power / noise power equals `snr_db`.

    Both powers are taken over the whole clip (silences included), the usual convention for
    corrupted-speech benchmarks. `noise_wave` must have the signal's length.
    """
    scale = rms(signal) / max(rms(noise_wave), 1e-12) * db_to_amp(-snr_db)
    return (signal + noise_wave * np.float32(scale)).astype(np.float32)


def weakest_event_snr_db(clean: np.ndarray, noise_wave: np.ndarray, below_peak_db: float = 30.0,
                         frame_s: float = 0.032) -> float:
    """The signal-to-noise ratio of the least audible sound in a clip, in dB.

    The clean clip is cut into frames; frames within `below_peak_db` of its loudest frame are sounds, and
    each run of them is one sound event. An event's SNR is its energy over the noise energy in the same
    frames, so a quiet beep in a loud clip, or a sound under a burst of babble, counts for itself.

    Args:
        clean: `[S]` the clip without the noise.
        noise_wave: `[S]` the noise as it will be added.
    Returns:
        The lowest event SNR (inf for a silent clip).
    """
    hop = n_samples(frame_s)
    count = clean.size // hop
    signal_power = np.square(clean[: count * hop].reshape(count, hop), dtype=np.float64).sum(axis=1)
    noise_power = np.square(noise_wave[: count * hop].reshape(count, hop), dtype=np.float64).sum(axis=1)
    if count == 0 or signal_power.max() <= 0:
        return float("inf")
    on = signal_power > signal_power.max() * 10.0 ** (-below_peak_db / 10.0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    snrs = [signal_power[a:b].sum() / max(noise_power[a:b].sum(), 1e-20) for a, b in zip(edges[::2], edges[1::2])]
    return float(10.0 * np.log10(min(snrs)))


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (pitch and tempo both scale by `factor`, length by 1/`factor`).

    Done by resampling (soxr, high quality): the clip is read as if recorded at 16 kHz x `factor` and
    converted back to 16 kHz.
    """
    return soxr.resample(x.astype(np.float32), SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def crest_db(x: np.ndarray) -> float:
    """Crest factor (peak over RMS) in dB; 0 for silence."""
    level = rms(x)
    return float(20.0 * np.log10(np.max(np.abs(x)) / level)) if level > 0 else 0.0


def swell(n: int, centre: int, width: int, gain: float) -> np.ndarray:
    """`[n]` gain curve: 1 everywhere except one Hann-shaped bump of height `1 + gain` and `width` samples."""
    curve = np.ones(n, dtype=np.float64)
    lo, hi = max(centre - width // 2, 0), min(centre + width // 2, n)
    curve[lo:hi] += gain * np.hanning(2 * (width // 2) + 1)[lo - (centre - width // 2) : hi - (centre - width // 2)]
    return curve


def raise_crest(x: np.ndarray, target_db: float, rng: np.random.Generator, width_s=(0.03, 0.08)) -> np.ndarray:
    """`x` with one smooth swell (a short rise and fall in level) that brings its crest factor to `target_db`.

    The swell is centred on a random sample where `x` is within 6 dB of its peak and lasts `width_s` (30-80
    ms by default; shorter ones reach higher crest factors), so it changes the level, not the spectrum: a
    waveform's crest factor then tells nothing about its shape. The height is found by bisection, each step
    costing only the swell's own samples. A clip already at or above the target, or silent, is returned
    unchanged.

    Args:
        x: `[S]` waveform.
        target_db: the crest factor wanted, in dB.
        rng: source of the swell's position and width.
    Returns:
        `[S]` float32.
    Raises:
        ValueError: no swell of that width reaches the target (the clip is too short for it).
    """
    loud = np.flatnonzero(np.abs(x) >= 0.5 * np.max(np.abs(x)))
    centre, width = int(rng.choice(loud)), n_samples(rng.uniform(*width_s))
    if crest_db(x) >= target_db or rms(x) == 0:  # silence has no crest factor to raise
        return x.astype(np.float32)
    bump = swell(x.size, centre, width, 1.0) - 1.0  # the swell's shape: 0 outside it, 1 at its top
    inside = bump > 0
    part, shape = np.abs(x[inside]).astype(np.float64), bump[inside]
    rest_peak = float(np.max(np.abs(x[~inside]))) if (~inside).any() else 0.0
    energy = float(np.sum(np.square(x, dtype=np.float64)))
    cross, square = float(np.sum(part**2 * shape)), float(np.sum(part**2 * shape**2))

    def crest(gain: float) -> float:  # crest factor of x * swell(gain) in dB, from the swell's samples only
        peak = max(rest_peak, float(np.max(part * (1.0 + gain * shape))))
        return 20.0 * np.log10(peak / np.sqrt((energy + 2 * gain * cross + gain**2 * square) / x.size))

    lo, hi = 0.0, 1.0
    while crest(hi) < target_db:
        if hi > 100.0:
            raise ValueError(f"a {width} sample swell cannot raise a {x.size} sample clip to {target_db:.1f} dB crest")
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-4 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if crest(mid) < target_db else (lo, mid)
    return (x * (1.0 + hi * bump)).astype(np.float32)


def peak_normalize(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale `x` so that its largest absolute sample equals `peak` (silence stays silent)."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * np.float32(peak / top)).astype(np.float32) if top > 0 else x.astype(np.float32)
