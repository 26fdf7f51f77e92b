"""Waveform building blocks: levels, lengths, noise spectra, SNR mixing and speed change, all measured."""

import numpy as np
import pytest

from mgrd.data.synth import signals as sig

from . import measure as m


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("timbre", sig.TIMBRES)
def test_every_timbre_has_the_same_level_and_length(timbre):
    wave = sig.tone(330.0, 0.5, timbre, _rng())
    assert wave.dtype == np.float32 and wave.size == 8000
    assert sig.rms(wave) == pytest.approx(0.3, rel=1e-3)


def test_tone_pitch_and_unknown_timbre():
    assert m.peak_hz(sig.tone(523.25, 0.5, "square", _rng()).astype(float)) == pytest.approx(523.25, rel=2e-3)
    with pytest.raises(ValueError, match="unknown timbre 'triangle'"):
        sig.tone(330.0, 0.5, "triangle", _rng())


def test_same_generator_same_samples():
    a = sig.babble_noise(4000, _rng(3))
    assert np.array_equal(a, sig.babble_noise(4000, _rng(3))) and not np.array_equal(a, sig.babble_noise(4000, _rng(4)))


def test_mix_at_snr_sets_the_ratio():
    signal = sig.tone(440.0, 1.0, "sine", _rng())
    noise = sig.white_noise(signal.size, _rng(1))
    mixed = sig.mix_at_snr(signal, noise, 5.0)
    residual = mixed - signal
    assert 10 * np.log10(sig.rms(signal) ** 2 / sig.rms(residual) ** 2) == pytest.approx(5.0, abs=0.01)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_change_speed_scales_pitch_and_length(factor):
    wave = sig.tone(400.0, 1.0, "sine", _rng())
    fast = sig.change_speed(wave, factor)
    assert fast.size == pytest.approx(16000 / factor, abs=2)
    assert m.peak_hz(fast.astype(float)) == pytest.approx(400.0 * factor, rel=2e-3)


def _octave_powers(x):
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / 16000)
    return [power[(freqs >= lo) & (freqs < 2 * lo)].sum() for lo in (250, 500, 1000, 2000)]


def test_noise_spectra():
    white = _octave_powers(sig.white_noise(64000, _rng()))
    pink = _octave_powers(sig.pink_noise(64000, _rng()))
    assert np.diff(np.log2(white)) == pytest.approx([1.0] * 3, abs=0.1)  # power doubles per octave
    assert np.diff(np.log2(pink)) == pytest.approx([0.0] * 3, abs=0.15)  # equal power per octave
    babble = sig.babble_noise(64000, _rng())
    power = np.abs(np.fft.rfft(babble)) ** 2
    freqs = np.fft.rfftfreq(babble.size, 1 / 16000)
    assert power[(freqs > 250) & (freqs < 3500)].sum() / power.sum() > 0.9  # speech band
    frames = babble[: 64000 // 400 * 400].reshape(-1, 400)
    levels = 10 * np.log10(np.mean(frames**2, axis=1))
    assert np.percentile(levels, 90) - np.percentile(levels, 10) > 3.0  # syllable-rate fluctuation
    for noise in (sig.white_noise(8000, _rng()), sig.pink_noise(8000, _rng()), babble):
        assert noise.dtype == np.float32 and sig.rms(noise) == pytest.approx(1.0, rel=0.02)


def test_place_envelope_ramp_and_normalise():
    canvas = sig.place([(0.1, np.ones(1600, np.float32)), (0.45, np.ones(1600, np.float32))], 0.5)
    assert canvas.size == 8000 and canvas[1600:3200].min() == 1.0 and canvas[7200:].sum() == 800.0
    env = sig.envelope(1600, 0.01, 0.01)
    assert env[0] < 0.01 and env[800] == 1.0 and env[-1] < 0.01
    ramp = sig.gain_ramp(100, -20.0, 0.0)
    assert ramp[0] == pytest.approx(0.1) and ramp[-1] == pytest.approx(1.0)
    assert np.abs(sig.peak_normalize(canvas * 3, 0.7)).max() == pytest.approx(0.7)
    assert not sig.peak_normalize(np.zeros(10, np.float32)).any()


@pytest.mark.parametrize("timbre", ["square", "sawtooth"])
def test_harmonic_tone_keeps_the_spectrum_and_tames_the_crest(timbre):
    wave = sig.harmonic_tone(250.0, 1.0, timbre, _rng())
    assert wave.dtype == np.float32 and wave.size == 16000 and sig.rms(wave) == pytest.approx(0.3, rel=1e-3)
    f0, h2, h3, _ = m.harmonic_levels_db(wave.astype(np.float64))
    assert f0 == pytest.approx(250.0, rel=1e-3)
    assert h3 == pytest.approx(20 * np.log10(1 / 3), abs=0.5)  # 1/k harmonics, whatever the phases
    assert h2 == pytest.approx(20 * np.log10(1 / 2), abs=0.5) if timbre == "sawtooth" else h2 < -40
    assert 3.0 < sig.crest_db(wave) < 7.0  # the plain shapes sit at 0 dB (square) and 4.8 dB (sawtooth)


def test_uniform_noise_timbre_is_white_and_bounded():
    wave = sig.tone(0.0, 2.0, "noise", _rng())
    assert sig.crest_db(wave) == pytest.approx(20 * np.log10(np.sqrt(3)), abs=0.1)
    power, _, freqs = m.spectrogram(wave.astype(np.float64))
    mean = power.mean(axis=0)
    low, high = mean[(freqs > 200) & (freqs < 2000)].mean(), mean[(freqs > 4000) & (freqs < 7500)].mean()
    assert abs(10 * np.log10(low / high)) < 0.5


@pytest.mark.parametrize("target", [6.0, 9.0, 12.0])
def test_raise_crest_reaches_the_target_with_one_swell(target):
    rng = _rng(3)
    clip = sig.place([(0.1, sig.note(440.0, 0.8, "sine", rng))], 1.0)
    raised = sig.raise_crest(clip, target, rng)
    assert sig.crest_db(raised) == pytest.approx(target, abs=0.01)
    changed = np.flatnonzero(np.abs(raised - clip) > 1e-6)
    assert changed.size and (changed[-1] - changed[0]) / 16000 <= 0.08  # one swell, at most 80 ms long
    assert sig.raise_crest(clip, 1.0, rng) is not clip and np.array_equal(sig.raise_crest(clip, 1.0, rng), clip)
    with pytest.raises(ValueError, match="cannot raise"):
        sig.raise_crest(clip, 40.0, rng)
