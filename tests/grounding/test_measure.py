"""`mgrd.grounding.measure` against signals whose truth is known by construction, then on synthetic-suite items.

Tolerances come from the methods: phase-vocoder frequency to 0.1 %, YIN to 0.05 % on a sine and 0.5 % on
the plain (aliased) square and sawtooth shapes, event edges within 10 ms (20 ms frames, 5 ms hop, edges
interpolated), level trends within 1 dB over a second or more.
"""

import numpy as np
import pytest

from mgrd.data.synth import FAMILIES
from mgrd.data.synth import signals as sig
from mgrd.data.synth.writer import item_rng
from mgrd.grounding import measure as gm


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("timbre", ["sine", "square", "sawtooth"])
@pytest.mark.parametrize("freq", [90.0, 440.0, 1234.5, 3000.0])
def test_dominant_hz_of_a_tone(timbre, freq):
    wave = sig.note(freq, 0.4, timbre, _rng())
    # below ~100 Hz a 64 ms frame holds 6 periods and the mirror image of the peak leaks in: 0.2 %
    assert gm.dominant_hz(wave) == pytest.approx(freq, rel=1e-3 if freq > 100 else 2e-3)


def test_dominant_hz_in_noise_and_in_a_range():
    rng = _rng(1)
    wave = sig.mix_at_snr(sig.note(777.0, 0.5, "sine", rng), sig.white_noise(8000, rng), 5.0)
    assert gm.dominant_hz(wave) == pytest.approx(777.0, rel=2e-3)
    two = sig.note(300.0, 0.5, "sine", rng) + sig.note(2000.0, 0.5, "sine", rng, -10.0)
    assert gm.dominant_hz(two, fmin=1000.0) == pytest.approx(2000.0, rel=1e-3)
    with pytest.raises(ValueError, match="no frequency bins"):
        gm.dominant_hz(two, fmin=9000.0, fmax=9500.0)


@pytest.mark.parametrize("freq", [80.0, 150.0, 440.0, 990.0])
def test_f0_of_tones(freq):
    assert gm.f0_hz(sig.note(freq, 0.4, "sine", _rng())) == pytest.approx(freq, rel=5e-4)
    for timbre in ("square", "sawtooth"):
        assert gm.f0_hz(sig.note(freq, 0.4, timbre, _rng())) == pytest.approx(freq, rel=5e-3)


def test_f0_finds_the_fundamental_under_a_louder_overtone():
    t = np.arange(8000) / 16_000
    wave = sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in [(0.2, 200, 0.0), (0.5, 400, 1.0), (0.3, 600, 0.0)])
    assert gm.dominant_hz(wave) == pytest.approx(400.0, rel=1e-3)  # the strongest peak is the overtone
    assert gm.f0_hz(wave) == pytest.approx(200.0, rel=1e-3)  # the pitch is the fundamental
    assert np.isnan(gm.f0_hz(wave[:400]))  # shorter than two periods of 50 Hz


def _beeps(rng, onsets, durations, levels_db, total_s, freq=1000.0):
    clip = sig.place([(t, sig.note(freq, d, "sine", rng, g)) for t, d, g in zip(onsets, durations, levels_db)],
                     total_s)
    return clip


def test_events_count_and_time_beeps_in_noise():
    rng = _rng(2)
    onsets, durations, levels = [0.2, 0.55, 0.8, 1.4], [0.1, 0.15, 0.06, 0.3], [0.0, -6.0, -3.0, -10.0]
    clip = sig.mix_at_snr(_beeps(rng, onsets, durations, levels, 2.0), sig.white_noise(32000, rng), 20.0)
    found = gm.events(clip)
    assert len(found) == 4
    np.testing.assert_allclose([e.onset_s for e in found], onsets, atol=0.01)
    np.testing.assert_allclose([e.duration_s for e in found], durations, atol=0.015)
    # levels: a full-scale sine is 0 dB; these notes have RMS 0.3 (-7.4 dB re a full-scale sine's 0.707)
    np.testing.assert_allclose([e.level_db for e in found], np.array(levels) + 20 * np.log10(0.3 / np.sqrt(0.5)),
                               atol=1.0)


def test_events_in_a_band_ignore_a_louder_drone():
    rng = _rng(3)
    beeps = _beeps(rng, [0.3, 0.9], [0.12, 0.12], [-12.0, -12.0], 1.5, freq=2000.0)
    clip = beeps + sig.note(120.0, 1.5, "sine", rng)  # a drone 12 dB above the beeps, all along
    assert gm.events(clip) == []  # broadband, the drone is the floor and the beeps barely move it
    found = gm.events(clip, band_hz=(1800.0, 2200.0))
    np.testing.assert_allclose([e.onset_s for e in found], [0.3, 0.9], atol=0.01)


def test_events_join_close_pieces_and_drop_clicks():
    rng = _rng(4)
    clip = _beeps(rng, [0.2, 0.34, 0.8], [0.1, 0.1, 0.004], [0.0, 0.0, 0.0], 1.2)  # 40 ms apart, then a click
    assert [round(e.onset_s, 2) for e in gm.events(clip, min_gap_s=0.02)] == [0.2, 0.34]
    joined = gm.events(clip, min_gap_s=0.06)
    assert len(joined) == 1 and joined[0].duration_s == pytest.approx(0.24, abs=0.015)


@pytest.mark.parametrize("change_db", [-18.0, -8.0, 8.0, 18.0])
def test_loudness_trend_of_a_ramp_with_tremolo(change_db):
    rng = _rng(5)
    wave = sig.note(500.0, 1.6, "sine", rng)
    wave = wave * (1 + 0.12 * np.sin(2 * np.pi * 5 * np.arange(wave.size) / 16_000))
    start, end = (-change_db, 0.0) if change_db > 0 else (0.0, change_db)
    clip = sig.place([(0.2, wave * sig.gain_ramp(wave.size, start, end))], 2.0)
    trend = gm.loudness_trend(clip)
    assert trend.change_db == pytest.approx(change_db, abs=1.0)
    assert trend.slope_db_per_s == pytest.approx(change_db / 1.6, abs=1.0)
    assert trend.duration_s == pytest.approx(1.6, abs=0.05)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"expected a mono waveform \[S\], got shape \(2, 100\)"):
        gm.events(np.zeros((2, 100)))
    with pytest.raises(ValueError, match="too short for a trend"):
        gm.loudness_trend(sig.place([(0.1, sig.note(500.0, 0.05, "sine", _rng()))], 0.3))


# ---- on synthetic-suite items: the measurements recover the stored facts -------------------------------------

def _items(family: str, n: int = 12):
    return [FAMILIES[family].make(item_rng(21, family, "train", i), "train") for i in range(n)]


def test_beep_counts_and_onsets_of_suite_items():
    for item in _items("beep_count"):
        freq = item.meta["beep_hz"]
        found = gm.events(item.audio[0], band_hz=(freq - 150, freq + 150))
        assert len(found) == item.meta["count"]
        np.testing.assert_allclose([e.onset_s for e in found], item.meta["onsets_s"], atol=0.01)
        np.testing.assert_allclose([e.duration_s for e in found], item.meta["durations_s"], atol=0.015)


def test_pitches_of_suite_tones():
    for item in _items("pitch_compare"):
        found = gm.events(item.audio[0])
        assert len(found) == 2
        pitches = [gm.f0_hz(gm.cut(item.audio[0], e.onset_s + 0.02, e.offset_s - 0.02), fmax=600.0) for e in found]
        np.testing.assert_allclose(pitches, item.meta["f0_hz"], rtol=5e-3)


def test_loudness_trends_of_suite_items():
    for item in _items("loudness_trend"):
        carrier = item.meta["carrier_hz"]
        trend = gm.loudness_trend(item.audio[0], band_hz=(carrier * 0.9, carrier * 1.1))
        assert np.sign(trend.change_db) == np.sign(item.meta["change_db"])
        assert trend.change_db == pytest.approx(item.meta["change_db"], abs=2.0)


def test_voice_f0_of_a_gliding_harmonic_voice():
    """A buzz gliding 100 -> 140 Hz (median 120) with silent gaps: the median over voiced frames."""
    t = np.arange(32_000) / 16_000
    f0 = 100.0 + 20.0 * t  # Hz, linear glide over 2 s
    phase = 2 * np.pi * np.cumsum(f0) / 16_000
    buzz = sum(np.sin(k * phase) / k for k in range(1, 8))
    buzz[(t > 0.6) & (t < 0.8)] = 0.0  # a pause: not voiced, not counted
    assert gm.voice_f0_hz(buzz) == pytest.approx(np.median(f0[buzz != 0]), rel=0.02)
    assert np.isnan(gm.voice_f0_hz(np.zeros(16_000)))
    assert np.isnan(gm.voice_f0_hz(_rng().standard_normal(16_000)))  # noise has no pitch


@pytest.mark.integration
def test_voice_f0_of_the_speech_families_voices():
    from mgrd.data.synth import speech

    if not speech.speech_available():
        pytest.skip(speech.UNAVAILABLE_MESSAGE)
    measured = {}
    for voice, pitch, nominal in speech.LOW_VOICES + speech.HIGH_VOICES:
        f0 = gm.voice_f0_hz(speech.synthesize(speech.SENTENCES[1], voice, pitch, 175))
        assert f0 == pytest.approx(nominal, rel=0.12), (voice, pitch)
        measured[(voice, pitch)] = f0
    low = [measured[v, p] for v, p, _ in speech.LOW_VOICES]
    high = [measured[v, p] for v, p, _ in speech.HIGH_VOICES]
    assert max(low) < speech.PITCH_SPLIT_HZ < min(high)
