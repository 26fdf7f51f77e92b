"""Acoustic measurements for checking grounded claims: pitch, sound events (count, onsets, durations), loudness trend.

The MGRD grounding filter checks what a reasoning chain claims ("the second tone is higher", "three beeps",
"it gets louder by about 12 dB") against the audio. This module supplies the measurements; it extracts no
claims and decides nothing. Everything works on a mono float waveform at `RATE` (16 kHz; resample first)
with numpy only, and is meant for the clean, steady sounds of the synthetic suite and similar material
(tones, beeps, chords, a single voice); polyphonic music or overlapping talkers are out of scope.

- `frame_levels_db`: short-time level in dB (optionally within a frequency band).
- `events`: sound events as `Event(onset_s, offset_s, level_db)`, found against the clip's own noise floor
  with two thresholds (hysteresis), so a beep is one event even when noise flickers at its edges.
- `dominant_hz`: the strongest steady frequency of a stretch, refined by the phase advance between frames.
- `f0_hz`: the fundamental (pitch) of a steady stretch, by YIN (tones, held notes).
- `voice_f0_hz`: the median pitch of a voice over its voiced frames (frame-wise YIN).
- `loudness_trend`: a straight-line fit of the level in dB over the sounding part: `Trend(slope_db_per_s,
  change_db, duration_s)`.
- `spectral_peaks_hz`: the strongest peaks of the mean spectrum (the notes of a chord, overtones).
- `clip_facts`: all of the above as one facts dict under the synthetic suite's `meta` keys, which is what
  the claim verifier (`mgrd.grounding.claims`) checks a chain against when an item has no `meta`.

The synthetic-suite tests re-derive answers with their own, independently written measurements
(`tests/data/synth/measure.py`); this module is the package's copy for the filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16_000
FRAME_S, HOP_S = 0.02, 0.005  # 20 ms frames every 5 ms


@dataclass(frozen=True)
class Event:
    """One sound event: its start and end in seconds and its mean level in dB (re full scale)."""

    onset_s: float
    offset_s: float
    level_db: float

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


@dataclass(frozen=True)
class Trend:
    """A level trend: fitted slope in dB/s, the change it implies over the sound, and the sound's length."""

    slope_db_per_s: float
    change_db: float
    duration_s: float


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform [S], got shape {tuple(x.shape)}")
    return x


def _stft(x: np.ndarray, frame: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Complex STFT with a Hann window, frames centred at `hop` steps: (`[T, F]` spectra, `[T]` centre times)."""
    padded = np.pad(x, (frame // 2, frame - frame // 2))
    count = 1 + max(padded.size - frame, 0) // hop
    index = np.arange(count)[:, None] * hop + np.arange(frame)[None, :]
    return np.fft.rfft(padded[index] * np.hanning(frame), axis=1), np.arange(count) * hop / RATE


def frame_levels_db(x: np.ndarray, band_hz: tuple[float, float] | None = None, frame_s: float = FRAME_S,
                    hop_s: float = HOP_S) -> tuple[np.ndarray, np.ndarray]:
    """Short-time level of `x`.

    Args:
        x: `[S]` waveform at 16 kHz.
        band_hz: (low, high) to measure only that band; None for the whole spectrum.
        frame_s, hop_s: frame length and step.
    Returns:
        (`[T]` level in dB re a full-scale sine's power, `[T]` frame-centre times in s).
    """
    x = _check(x)
    frame, hop = max(int(round(frame_s * RATE)), 8), max(int(round(hop_s * RATE)), 1)
    spectra, times = _stft(x, frame, hop)
    power = np.abs(spectra) ** 2
    if band_hz is not None:
        freqs = np.fft.rfftfreq(frame, 1.0 / RATE)
        power = power[:, (freqs >= band_hz[0]) & (freqs <= band_hz[1])]
    # Parseval: a full-scale sine's windowed power, summed over the one-sided spectrum.
    reference = frame * np.sum(np.hanning(frame) ** 2) / 4
    return 10 * np.log10(power.sum(axis=1) / reference + 1e-12), times


def events(x: np.ndarray, band_hz: tuple[float, float] | None = None, on_db: float = 12.0, off_db: float = 6.0,
           below_peak_db: float = 30.0, min_gap_s: float = 0.02, min_len_s: float = 0.03) -> list[Event]:
    """Sound events: stretches whose level rises clearly above the clip's noise floor.

    The floor is the 10th percentile of the frame levels (the quiet stretches between sounds). An event
    starts where the level climbs `on_db` above the floor (and within `below_peak_db` of the loudest frame)
    and lasts while it stays `off_db` above it; events closer than `min_gap_s` are joined, shorter than
    `min_len_s` dropped (a click smears over one 20 ms frame and stays under 30 ms). An event's level is the
    mean of its steady part (frames within 6 dB of its loudest), and its edges are placed where the level
    crosses 6 dB below that (a frame half over the sound), interpolated between frames: within a few ms of
    the true edges.

    Args:
        x: `[S]` waveform at 16 kHz.
        band_hz: measure in this band only (e.g. around a beep's frequency, to ignore a drone).
    Returns:
        The events in time order.
    """
    levels, times = frame_levels_db(x, band_hz)
    floor = float(np.percentile(levels, 10))
    start_at = max(floor + on_db, levels.max() - below_peak_db)
    spans = _hysteresis(levels, start_at, min(floor + off_db, start_at))
    spans = _join(spans, times, min_gap_s)
    found = []
    for a, b in spans:
        plateau = levels[a:b][levels[a:b] >= levels[a:b].max() - 6.0]  # the steady part, not the fades
        level = float(10 * np.log10(np.mean(10 ** (plateau / 10))))
        edge = max(level - 6.0, floor + off_db)
        loud = a + np.flatnonzero(levels[a:b] > edge)  # walk out from the first and last frames above the edge
        onset, offset = _crossing(levels, times, loud[0], edge, -1), _crossing(levels, times, loud[-1], edge, +1)
        if offset - onset >= min_len_s:
            found.append(Event(onset, offset, level))
    return found


def _hysteresis(levels: np.ndarray, high: float, low: float) -> list[tuple[int, int]]:
    """[start, stop) frame spans that reach `high` and extend while above `low`."""
    above_low = levels > low
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above_low.astype(np.int8), [0]])))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if levels[a:b].max() >= high]


def _join(spans: list[tuple[int, int]], times: np.ndarray, min_gap_s: float) -> list[tuple[int, int]]:
    joined: list[list[int]] = []
    for a, b in spans:
        if joined and times[a] - times[joined[-1][1] - 1] < min_gap_s:
            joined[-1][1] = b
        else:
            joined.append([a, b])
    return [(a, b) for a, b in joined]


def _crossing(levels: np.ndarray, times: np.ndarray, i: int, edge: float, step: int) -> float:
    """Time where the level falls through `edge` walking from frame i (above it) in direction `step`,
    linearly interpolated between the frames on either side."""
    j = i
    while 0 <= j + step < levels.size and levels[j] > edge:
        j += step
    if levels[j] > edge:  # ran off the clip while still above the edge
        return float(times[j])
    inner = j - step  # last frame above the edge
    if levels[inner] <= edge:
        return float(times[inner])
    frac = (levels[inner] - edge) / (levels[inner] - levels[j])
    return float(times[inner] + frac * (times[j] - times[inner]))


def cut(x: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """`[S']` the samples of `x` between two times."""
    x = _check(x)
    return x[max(int(start_s * RATE), 0) : max(int(end_s * RATE), 0)]


def dominant_hz(x: np.ndarray, fmin: float = 50.0, fmax: float = 7500.0, frame_s: float = 0.064) -> float:
    """The strongest steady frequency of `x` in [fmin, fmax].

    The peak bin of the mean power spectrum gives a coarse value; the phase advance of that bin between
    consecutive frames (a phase vocoder) refines it to a small fraction of a bin, averaged over the frames
    where the bin is strong. Accurate to about 0.1 % for a tone lasting 100 ms or more.
    """
    x = _check(x)
    frame = int(round(frame_s * RATE))
    if x.size < frame + 1:
        frame = 1 << int(np.log2(max(x.size - 1, 16)))
    hop = frame // 4
    spectra, _ = _stft(x, frame, hop)
    freqs = np.fft.rfftfreq(frame, 1.0 / RATE)
    band = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
    if band.size == 0:
        raise ValueError(f"no frequency bins between {fmin} and {fmax} Hz")
    k = band[np.argmax((np.abs(spectra[:, band]) ** 2).mean(axis=0))]
    column = spectra[:, k]
    advance = np.angle(column[1:] * np.conj(column[:-1]))  # measured phase step per hop
    expected = 2 * np.pi * k * hop / frame
    deviation = np.angle(np.exp(1j * (advance - expected)))  # wrapped to (-pi, pi]
    weights = np.abs(column[1:]) * np.abs(column[:-1])
    strong = weights >= 0.25 * weights.max()
    step = float(np.sum(deviation[strong] * weights[strong]) / np.sum(weights[strong]))
    return float((k + step * frame / (2 * np.pi * hop)) * RATE / frame)


def f0_hz(x: np.ndarray, fmin: float = 50.0, fmax: float = 1000.0, threshold: float = 0.15) -> float:
    """The fundamental frequency of a steady stretch of `x`, by YIN (de Cheveigné & Kawahara, 2002).

    The cumulative-mean-normalised difference function of the whole stretch is searched for its first dip
    below `threshold` within the lag range of [fmin, fmax] (else its global minimum), and the lag refined by
    a parabola through the raw difference function at the dip. Unlike the strongest spectral peak, this
    finds the fundamental of a voice or a harmonic tone even when an overtone is louder. Accurate to about
    0.05 % on a sine and 0.5 % on aliased square or sawtooth shapes below 1 kHz.

    Returns:
        f0 in Hz, or NaN when the stretch is shorter than two periods of `fmin`.
    """
    x = _check(x)
    lag_min, lag_max = max(int(RATE / fmax), 2), int(np.ceil(RATE / fmin))
    if x.size < 2 * lag_max:
        return float("nan")
    return _yin(x, lag_min, lag_max, threshold)[0]


def _yin(x: np.ndarray, lag_min: int, lag_max: int, threshold: float) -> tuple[float, float]:
    """(f0 in Hz, aperiodicity: the normalised difference at the chosen lag, near 0 for a periodic sound)."""
    window = x.size - lag_max - 1
    size = 1 << int(np.ceil(np.log2(x.size + window)))
    # d(tau) = sum over the window of (x[t] - x[t + tau])^2, all lags at once with FFT correlation.
    cross = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(x[:window], size)), size)[: lag_max + 2]
    energy = np.concatenate([[0.0], np.cumsum(x**2)])
    shifted = energy[np.arange(lag_max + 2) + window] - energy[np.arange(lag_max + 2)]
    diff = energy[window] + shifted - 2 * cross
    diff[0] = 0.0
    cumulative = np.cumsum(diff[1:]) / np.arange(1, diff.size)
    normalised = np.concatenate([[1.0], diff[1:] / np.maximum(cumulative, 1e-20)])
    tau = _first_dip(normalised, lag_min, lag_max, threshold)
    a, b, c = diff[tau - 1], diff[tau], diff[tau + 1]  # refine on the raw difference (less biased)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) > 0 else 0.0
    return float(RATE / (tau + shift)), float(normalised[tau])


def voice_f0_hz(x: np.ndarray, fmin: float = 60.0, fmax: float = 400.0, frame_s: float = 0.04,
                hop_s: float = 0.01, max_aperiodicity: float = 0.2, below_peak_db: float = 25.0) -> float:
    """The median pitch of a voice over its voiced frames, in Hz (NaN when no frame is voiced).

    `f0_hz` suits a steady tone; speech glides, so each 40 ms frame gets its own YIN estimate, and only
    frames that are periodic (aperiodicity under `max_aperiodicity`) and loud (within `below_peak_db` of the
    loudest frame) count. This is the speaking F0 that a claim like "a low voice, near 90 Hz" refers to.
    """
    x = _check(x)
    frame, hop = int(round(frame_s * RATE)), int(round(hop_s * RATE))
    lag_min, lag_max = max(int(RATE / fmax), 2), int(np.ceil(RATE / fmin))
    if x.size < frame or frame < 2 * lag_max:
        return float("nan")
    starts = np.arange(0, x.size - frame + 1, hop)
    power = np.array([np.mean(x[a : a + frame] ** 2) for a in starts])
    loud = power > power.max() * 10 ** (-below_peak_db / 10)
    pitches = [_yin(x[a : a + frame], lag_min, lag_max, 0.1) for a in starts[loud]]
    voiced = [f for f, aperiodicity in pitches if aperiodicity < max_aperiodicity]
    return float(np.median(voiced)) if voiced else float("nan")


def _first_dip(normalised: np.ndarray, lag_min: int, lag_max: int, threshold: float) -> int:
    below = np.flatnonzero(normalised[lag_min : lag_max + 1] < threshold)
    if below.size == 0:
        return lag_min + int(np.argmin(normalised[lag_min : lag_max + 1]))
    tau = lag_min + int(below[0])
    while tau + 1 <= lag_max and normalised[tau + 1] < normalised[tau]:  # walk down to the dip's bottom
        tau += 1
    return tau


def loudness_trend(x: np.ndarray, band_hz: tuple[float, float] | None = None, below_peak_db: float = 30.0,
                   edge_s: float = 0.05) -> Trend:
    """Straight-line fit of the level (dB) against time over the sounding part of `x`.

    The sounding part runs from the first to the last frame within `below_peak_db` of the loudest one;
    `edge_s` at each end (fades) is left out of the fit. A tremolo or noise only scatters the points.

    Args:
        x: `[S]` waveform at 16 kHz.
        band_hz: fit the level in this band only (e.g. around a tone's frequency, to keep noise out).
    Returns:
        `Trend(slope_db_per_s, change_db, duration_s)`: `change_db` is the slope times the sounding length,
        positive when the sound gets louder.
    """
    levels, times = frame_levels_db(x, band_hz, frame_s=0.04, hop_s=0.01)
    sounding = np.flatnonzero(levels > levels.max() - below_peak_db)
    start, end = times[sounding[0]], times[sounding[-1]]
    inside = (times >= start + edge_s) & (times <= end - edge_s)
    if inside.sum() < 3:
        raise ValueError(f"the sound lasts {end - start:.3f} s: too short for a trend")
    slope = float(np.polyfit(times[inside], levels[inside], 1)[0])
    return Trend(slope, slope * float(end - start), float(end - start))


def spectral_peaks_hz(x: np.ndarray, count: int = 8, fmin: float = 50.0, fmax: float = 7500.0,
                      below_peak_db: float = 30.0, frame_s: float = 0.25) -> list[float]:
    """The strongest local maxima of the mean power spectrum of `x` (the notes of a chord, a tone's
    overtones), strongest first, each refined by a parabola through its log-power bin and neighbours.

    Only peaks within `below_peak_db` of the strongest count; a peak must beat both neighbouring bins.
    The 250 ms frame resolves notes 20 Hz apart (a minor third over 110 Hz); accurate to about 1 Hz for
    steady sine components.

    Returns:
        Up to `count` frequencies in Hz (empty for silence).
    """
    x = _check(x)
    frame = int(round(frame_s * RATE))
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    spectra, _ = _stft(x, frame, frame // 4)
    power = 10 * np.log10((np.abs(spectra) ** 2).mean(axis=0) + 1e-20)
    freqs = np.fft.rfftfreq(frame, 1.0 / RATE)
    inner = np.arange(1, power.size - 1)
    is_peak = (power[inner] > power[inner - 1]) & (power[inner] >= power[inner + 1])
    is_peak &= (freqs[inner] >= fmin) & (freqs[inner] <= fmax) & (power[inner] >= power.max() - below_peak_db)
    found = inner[is_peak]
    found = found[np.argsort(power[found])[::-1][:count]]
    peaks = []
    for k in found:
        a, b, c = power[k - 1], power[k], power[k + 1]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        peaks.append(float((k + shift) * RATE / frame))
    return peaks


def clip_facts(x: np.ndarray) -> dict:
    """Facts about a clip measured from its audio, under the keys and units the synthetic suite's `meta`
    uses, so `mgrd.grounding.claims.verify_claims` checks a chain the same way with or without meta.

    Events and the loudness trend are measured in the band of the clip's strongest spectral peaks (0.8x the
    lowest to 1.25x the highest of the three strongest), which keeps broadband noise out of them.

    Keys: `clip_s`; `peaks_hz` (spectral peaks, strongest first); with sound events: `count`, `onsets_s`,
    `durations_s`, `levels_db` (each event's level relative to the first event's), `onset_s` and
    `duration_s` (first onset to last offset), `centres_s` (each event's midpoint), `f0_hz` (each event's
    `dominant_hz`: the fundamental of the suite's tones, whose first harmonic is their strongest),
    `event_rate_hz` (events per second, from three events); when the sound lasts long enough for a
    trend: `change_db`, `start_db` / `end_db` (relative to the loudest point) and `sounding_duration_s`;
    `snr` (no unit suffix: it describes the measurement, not the sound), the loudest frame over the noise
    floor (10th percentile) in that band, in dB: under about 15 dB, levels and edges are not measurable.
    Within `events`' scope: tones, beeps, chords, not speech or overlapping sounds.

    Args:
        x: `[S]` waveform at 16 kHz.
    Returns:
        {key: value} with plain floats and lists.
    """
    x = _check(x)
    peaks = spectral_peaks_hz(x)
    facts: dict = {"clip_s": x.size / RATE, "peaks_hz": peaks}
    band = (0.8 * min(peaks[:3]), min(1.25 * max(peaks[:3]), RATE / 2)) if peaks else None
    levels, _ = frame_levels_db(x, band)
    facts["snr"] = float(levels.max() - np.percentile(levels, 10))
    found = events(x, band) if np.any(x) else []
    if found:
        facts.update(count=len(found), onsets_s=[e.onset_s for e in found],
                     durations_s=[e.duration_s for e in found],
                     levels_db=[e.level_db - found[0].level_db for e in found],
                     onset_s=found[0].onset_s, duration_s=found[-1].offset_s - found[0].onset_s,
                     centres_s=[(e.onset_s + e.offset_s) / 2 for e in found])
        facts["f0_hz"] = [dominant_hz(cut(x, e.onset_s, e.offset_s)) for e in found]
        if len(found) >= 3:
            facts["event_rate_hz"] = (len(found) - 1) / (found[-1].onset_s - found[0].onset_s)
    try:
        trend = loudness_trend(x, band)
    except ValueError:  # too short a sound for a trend
        return facts
    change = trend.change_db
    facts.update(change_db=change, start_db=min(0.0, -change), end_db=min(0.0, change),
                 sounding_duration_s=trend.duration_s)
    return facts
