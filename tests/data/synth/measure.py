"""Independent acoustic measurements for the synthetic-suite tests.

These read a wav file back from disk and measure what a listener would: where sounds start and stop,
their pitch, their level, the intervals in a chord, the harmonic pattern of a timbre. Nothing here
imports the generator: the tests re-derive every stored answer from the audio with this code, so an answer
is correct by measurement, not by construction.

Tools:
- `spectrogram`: Hann-windowed power spectrogram.
- `tonal_segments`: runs of frames holding a tone, found by whitening each frequency bin by its own noise
  floor (a low percentile over time), so white, pink or babble backgrounds all flatten out.
- `band_segments`: runs of frames with energy near one frequency (beeps, clicks, events).
- `peak_hz`: the fundamental of a stretch of audio from a zero-padded FFT with parabolic interpolation.
- `chord_intervals`, `harmonic_levels_db`, `band_level_db` for chords, timbres and levels.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf

RATE = 16_000
FRAME, HOP = 256, 64  # 16 ms frames every 4 ms: fine enough for 30 ms gaps between notes


def read_wav(path) -> np.ndarray:
    """Samples of a mono 16 kHz wav as float64."""
    x, rate = sf.read(str(path), dtype="float64")
    assert rate == RATE, f"{path}: sample rate {rate}"
    assert x.ndim == 1, f"{path}: expected mono"
    return x


def spectrogram(x: np.ndarray, frame: int = FRAME, hop: int = HOP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram: (`[T, F]` power, `[T]` frame-centre times in s, `[F]` bin frequencies in Hz)."""
    x = np.pad(x, (frame // 2, frame // 2))
    starts = np.arange(0, x.size - frame + 1, hop)
    frames = x[starts[:, None] + np.arange(frame)] * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return power, starts / RATE, np.fft.rfftfreq(frame, 1.0 / RATE)


def _runs(mask: np.ndarray, times: np.ndarray, min_len_s: float, bridge_s: float) -> list[tuple[float, float]]:
    """(start, end) times of True runs; gaps shorter than `bridge_s` are bridged, runs under `min_len_s` dropped."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    runs: list[list[float]] = []
    for s, e in zip(starts, ends):
        if runs and times[s] - runs[-1][1] < bridge_s:
            runs[-1][1] = times[e]
        else:
            runs.append([times[s], times[e]])
    return [(a, b) for a, b in runs if b - a >= min_len_s]


def tonal_segments(x: np.ndarray, threshold_db: float = 22.0, below_peak_db: float = 18.0, min_len_s: float = 0.03,
                   bridge_s: float = 0.012) -> list[tuple[float, float]]:
    """Stretches of audio that hold a tone, as (start_s, end_s).

    Each bin's power is divided by its 20th percentile over time (the noise floor of that bin, since no
    single frequency sounds for most of a clip), and a frame is tonal when its strongest whitened bin
    between 60 Hz and 7 kHz stands `threshold_db` above its floor and within `below_peak_db` of the clip's
    most tonal frame (so bursts of babble between the tones do not count).
    """
    power, times, freqs = spectrogram(x)
    band = (freqs >= 60) & (freqs <= 7000)
    whitened = power[:, band] / (np.percentile(power[:, band], 20, axis=0) + 1e-20)
    strength = 10 * np.log10(whitened.max(axis=1) + 1e-20)
    return _runs(strength > max(threshold_db, strength.max() - below_peak_db), times, min_len_s, bridge_s)


def peak_hz(x: np.ndarray, fmin: float = 60.0, fmax: float = 7000.0) -> float:
    """Frequency of the strongest spectral peak in [fmin, fmax] (Hann, zero-padded FFT, parabolic interpolation)."""
    size = 1 << 16
    while size < x.size:
        size <<= 1
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size), size))
    freqs = np.fft.rfftfreq(size, 1.0 / RATE)
    lo, hi = np.searchsorted(freqs, [fmin, fmax])
    k = lo + int(np.argmax(mag[lo:hi]))
    a, b, c = np.log(mag[k - 1 : k + 2] + 1e-20)
    offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return float((k + offset) * RATE / size)


def cut(x: np.ndarray, start_s: float, end_s: float, trim_s: float = 0.01) -> np.ndarray:
    """Samples between two times, trimmed a little at both ends to stay inside the sound."""
    a, b = int((start_s + trim_s) * RATE), int((end_s - trim_s) * RATE)
    return x[a : max(b, a + 64)]


def segment_pitches(x: np.ndarray, segments: list[tuple[float, float]]) -> list[float]:
    return [peak_hz(cut(x, a, b)) for a, b in segments]


def band_envelope_db(x: np.ndarray, freq_hz: float, half_width_hz: float = 100.0, frame: int = FRAME):
    """Energy within `half_width_hz` of `freq_hz` per frame, in dB: (`[T]` dB, `[T]` times)."""
    power, times, freqs = spectrogram(x, frame)
    band = np.abs(freqs - freq_hz) <= half_width_hz
    return 10 * np.log10(power[:, band].sum(axis=1) + 1e-20), times


def band_segments(x: np.ndarray, freq_hz: float, below_peak_db: float = 15.0, rise_db: float = 12.0,
                  min_len_s: float = 0.02, bridge_s: float = 0.03) -> list[tuple[float, float]]:
    """Runs of frames whose energy near `freq_hz` is within `below_peak_db` of the loudest frame and
    `rise_db` above the band's floor (20th percentile)."""
    env, times = band_envelope_db(x, freq_hz)
    threshold = max(np.percentile(env, 20) + rise_db, env.max() - below_peak_db)
    return _runs(env > threshold, times, min_len_s, bridge_s)


def dominant_hz(x: np.ndarray, fmin: float = 300.0, fmax: float = 7000.0) -> float:
    """The strongest frequency over the whole clip in [fmin, fmax]."""
    return peak_hz(x, fmin, fmax)


def band_level_db(x: np.ndarray, freq_hz: float, start_s: float, end_s: float) -> float:
    """Mean energy near `freq_hz` between two times, in dB (the middle 60% of the stretch, away from edges)."""
    env, times = band_envelope_db(x, freq_hz)
    span = end_s - start_s
    inside = (times >= start_s + 0.2 * span) & (times <= end_s - 0.2 * span)
    return float(10 * np.log10(np.mean(10 ** (env[inside] / 10))))


def level_slope_db_per_s(x: np.ndarray, freq_hz: float, below_peak_db: float = 25.0) -> tuple[float, float]:
    """Straight-line fit of the level near `freq_hz` while the sound lasts: (slope in dB/s, duration in s).

    The band is narrow (64 ms frames, about +-16 Hz), and the sound is the run of frames within
    `below_peak_db` of the loudest one; its first and last 64 ms (the frame length) are left out of the fit.
    """
    env, times = band_envelope_db(x, freq_hz, half_width_hz=16.0, frame=1024)
    loudest = int(np.argmax(env))
    runs = _runs(env > env.max() - below_peak_db, times, 0.0, 0.0)
    start, end = next((a, b) for a, b in runs if a <= times[loudest] <= b)
    inside = (times >= start + 0.064) & (times <= end - 0.064)
    slope = np.polyfit(times[inside], env[inside], 1)[0]
    return float(slope), float(end - start)


def _local_peaks(mag: np.ndarray, freqs: np.ndarray, fmin: float, fmax: float, count: int) -> list[float]:
    """Frequencies of the `count` strongest local maxima of `mag` in [fmin, fmax], at least 3% apart."""
    lo, hi = np.searchsorted(freqs, [fmin, fmax])
    k = np.arange(lo + 1, hi - 1)
    is_peak = (mag[k] > mag[k - 1]) & (mag[k] >= mag[k + 1])
    found: list[float] = []
    for i in k[is_peak][np.argsort(mag[k[is_peak]])[::-1]]:
        if all(abs(freqs[i] / f - 1) > 0.03 for f in found):
            found.append(float(freqs[i]))
        if len(found) == count:
            break
    return found


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(16, int(np.ceil(np.log2(x.size))))
    return np.abs(np.fft.rfft(x * np.hanning(x.size), size)), np.fft.rfftfreq(size, 1.0 / RATE)


def chord_intervals(x: np.ndarray, fmin: float = 80.0, fmax: float = 2500.0) -> tuple[float, list[float]]:
    """(root Hz, semitones of the other two notes above the root), from the three strongest spectral peaks."""
    mag, freqs = spectrum(x)
    notes = sorted(_local_peaks(mag, freqs, fmin, fmax, 3))
    return notes[0], [12 * np.log2(f / notes[0]) for f in notes[1:]]


def harmonic_levels_db(x: np.ndarray) -> tuple[float, float, float, float]:
    """(f0 Hz, level of the 2nd and 3rd harmonics re the fundamental in dB, peak prominence in dB).

    Prominence is the fundamental's magnitude over the median magnitude between 60 Hz and 7 kHz: large for
    any tone, small for noise.
    """
    mag, freqs = spectrum(x)
    f0 = peak_hz(x, 60.0, 7000.0)

    def at(f):  # strongest magnitude within 1% of f
        near = np.abs(freqs - f) <= 0.01 * f
        return mag[near].max() if near.any() else 1e-20

    band = (freqs >= 60) & (freqs <= 7000)
    prominence = 20 * np.log10(at(f0) / np.median(mag[band]))
    return f0, 20 * np.log10(at(2 * f0) / at(f0)), 20 * np.log10(at(3 * f0) / at(f0)), float(prominence)


def tone_regions(x: np.ndarray, count: int, below_peak_db: float = 15.0, margin_s: float = 0.02):
    """The `count` tones of a clip, found one at a time, as sorted (start_s, end_s, pitch_hz).

    Each round takes the strongest frequency in the audio not yet explained, follows its energy in a
    narrow band (64 ms frames, about +-16 Hz) to find when it sounds, and blanks that stretch out for the
    next round. A narrow band keeps broadband noise, babble included, far below the tone. The pitch is then
    re-measured on the stretch itself, so a harmonic of another tone can never lend its frequency.
    """
    left = x.copy()
    found = []
    for _ in range(count):
        freq = peak_hz(left)
        env, times = band_envelope_db(left, freq, half_width_hz=16.0, frame=1024)
        runs = _runs(env > env.max() - below_peak_db, times, 0.0, 0.0)
        loudest = times[int(np.argmax(env))]
        start, end = next((a, b) for a, b in runs if a <= loudest <= b)
        found.append((start, end))
        left[max(int((start - margin_s) * RATE), 0) : int((end + margin_s) * RATE)] = 0.0
    return [(a, b, peak_hz(cut(x, a, b))) for a, b in sorted(found)]


def local_prominence_db(x: np.ndarray, freq_hz: float, span_hz: float = 200.0) -> float:
    """How far the spectrum at `freq_hz` stands above the median within `span_hz` of it, in dB.

    A steady tone stands 20 dB or more above its neighbourhood; a burst of noise or babble does not.
    """
    mag, freqs = spectrum(x)
    near = np.abs(freqs - freq_hz) <= span_hz
    peak = mag[np.abs(freqs - freq_hz) <= 0.01 * freq_hz].max()
    return float(20 * np.log10(peak / np.median(mag[near])))


def notes(x: np.ndarray, min_prominence_db: float = 18.0) -> list[tuple[float, float, float]]:
    """The notes of a melody as (start_s, end_s, pitch_hz).

    Tonal stretches (`tonal_segments`) that are not clearly tonal on their own are dropped (noise bursts),
    and neighbours within 3% in pitch are joined: consecutive notes differ by a semitone (6%) or more, so
    two such pieces are one note that noise cut in two.
    """
    found: list[list[float]] = []
    for a, b in tonal_segments(x, below_peak_db=25.0):
        piece = cut(x, a, b, trim_s=0.005)
        pitch = peak_hz(piece)
        if local_prominence_db(piece, pitch) < min_prominence_db:
            continue
        if found and abs(pitch / found[-1][2] - 1) < 0.03:
            found[-1][1] = b
        else:
            found.append([a, b, pitch])
    return [tuple(n) for n in found]


def chord_quality(x: np.ndarray) -> str:
    """'major' or 'minor' from the lowest interval of the three strongest notes (4 or 3 semitones)."""
    _, intervals = chord_intervals(x)
    third = round(min(intervals))
    assert third in (3, 4) and round(max(intervals)) == 7, f"not a root-position triad: {intervals}"
    return "major" if third == 4 else "minor"


def beeps(x: np.ndarray, below_peak_db: float = 15.0) -> tuple[float, list[tuple[float, float]]]:
    """(frequency, [(start_s, end_s)]) of the short sounds at the clip's dominant frequency."""
    freq = peak_hz(x, 300.0, 7000.0)
    return freq, band_segments(x, freq, below_peak_db=below_peak_db)


def read_rows(manifest) -> list[tuple[dict, np.ndarray]]:
    """(row, first clip) for each manifest row, the clip read back from its wav file."""
    import json
    from pathlib import Path

    manifest = Path(manifest)
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    return [(row, read_wav(manifest.parent / row["audio"][0])) for row in rows]
