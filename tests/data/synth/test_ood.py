"""The ood split: outside training on every axis it shifts, and `meta` true to the audio after corruption.

- Noise corruptions sit strictly below the training background SNRs.
- Each family's split parameter (the one whose train and test ranges differ) lies outside the range the
  train items span, after any speed change too: a speed change may only push it further away.
- After a speed change, the onsets and durations in `meta` are those measured in the clip (with
  `measure.py`, independent of the generator); after noise, `meta` keeps the clean facts and no sound is
  buried under the noise (`signals.weakest_event_snr_db`, checked here against its definition).
"""

from __future__ import annotations

import numpy as np
import pytest

from mgrd.data.synth import DEFAULT_FAMILIES
from mgrd.data.synth import acoustic as ac
from mgrd.data.synth import signals as sig

from . import measure as m
from .draws import draw as _draw
from .test_acoustic import SPLIT_KEYS, _values

N_TRAIN, N_OOD = 120, 90  # the train draw is test_acoustic's


def test_ood_noise_is_below_the_training_background():
    families = ("pitch_compare", "beep_count", "timbre")
    train_snrs = [it.meta["background"]["snr_db"] for f in families for it in _draw(f, "train", N_TRAIN)]
    ood = [it.meta["corruption"] for f in families for it in _draw(f, "ood", N_OOD)]
    noisy = [c["snr_db"] for c in ood if c["kind"] != "speed"]
    assert len(noisy) > 30 and len(set(noisy)) >= 3
    assert max(noisy) < min(min(train_snrs), ac.BACKGROUND_SNR_DB[0]), (sorted(set(noisy)), min(train_snrs))


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_ood_split_parameter_lies_outside_the_training_range(family):
    key = SPLIT_KEYS[family]
    train = _values(_draw(family, "train", N_TRAIN), key)
    ood_items = _draw(family, "ood", N_OOD)
    assert any(it.meta["corruption"]["kind"] == "speed" for it in ood_items)
    for item in ood_items:
        values = _values([item], key) if item.meta[key] is not None else np.array([])
        inside = values[(values >= train.min()) & (values <= train.max())]
        assert inside.size == 0, (f"{family}: ood {key} {inside} inside training {train.min():.3f}-{train.max():.3f} "
                                  f"({item.meta['corruption']})")


def test_speed_changes_move_away_from_the_training_range():
    above_hz, below_hz = ({"f0_hz": [700.0, 900.0]}, {"f0_hz": [100.0]})
    assert ac.away_speeds(above_hz, ("f0_hz", (150.0, 500.0))) == (1.1, 1.25)
    assert ac.away_speeds(below_hz, ("f0_hz", (150.0, 500.0))) == (0.8, 0.9)
    assert ac.away_speeds({"durations_s": [1.0, 1.4]}, ("durations_s", (0.2, 0.8))) == (0.8, 0.9)  # longer
    assert ac.away_speeds({"f0_hz": None}, ("f0_hz", (150.0, 400.0))) == ac.OOD_SPEEDS
    assert ac.away_speeds({"f0_hz": [700.0]}, None) == ac.OOD_SPEEDS


def test_scale_facts_scales_numpy_arrays_and_scalars():
    facts = {"durations_s": np.array([0.5, 1.0]), "f0_hz": np.float32(400.0), "count": np.int64(3),
             "onsets_s": [np.float64(0.2)], "fast": np.bool_(True), "levels_db": np.array([3.0])}
    scaled = ac.scale_facts(facts, 1.25)
    assert scaled["durations_s"] == pytest.approx([0.4, 0.8]) and scaled["f0_hz"] == pytest.approx(500.0)
    assert scaled["onsets_s"] == pytest.approx([0.16]) and scaled["count"] == 3 and scaled["fast"]
    assert list(scaled["levels_db"]) == [3.0]


# The sounds of each family as measured: (onsets, durations), in time order.
def _tonal(x):
    found = [(a, b) for a, b, _ in m.notes(x)]
    return [a for a, _ in found], [b - a for a, b in found]


def _beeps(x):
    _, found = m.beeps(x, below_peak_db=26.0)
    return [a for a, _ in found], [b - a for a, b in found]


TIMED = {"pitch_compare": _tonal, "melody_contour": _tonal, "contour_tempo": _tonal, "higher_longer": _tonal,
         "beep_count": _beeps, "louder_beeps": _beeps}


@pytest.mark.parametrize("family", sorted(TIMED))
def test_meta_times_match_the_audio_after_a_speed_change(family):
    items = [it for it in _draw(family, "ood", N_OOD) if it.meta["corruption"]["kind"] == "speed"][:8]
    assert items
    for item in items:
        onsets, durations = TIMED[family](item.audio[0].astype(np.float64))
        factor = item.meta["corruption"]["factor"]
        assert len(onsets) == len(item.meta["onsets_s"]), (family, factor, onsets, item.meta["onsets_s"])
        # 4 ms analysis hop, 10 ms fades: edges land within 20 ms; an unscaled meta is off by 10-25 %.
        np.testing.assert_allclose(onsets, item.meta["onsets_s"], atol=0.02, err_msg=f"{family} at {factor}x")
        np.testing.assert_allclose(durations, item.meta["durations_s"], atol=0.03, err_msg=f"{family} at {factor}x")


def test_weakest_event_snr_counts_each_sound_for_itself():
    rng = np.random.default_rng(0)
    loud, quiet = sig.note(1000.0, 0.3, "sine", rng), sig.note(1000.0, 0.3, "sine", rng, -20.0)
    clean = sig.place([(0.2, loud), (1.0, quiet)], 1.6)
    noise = sig.white_noise(clean.size, rng) * np.float32(0.01)
    expected = 10 * np.log10(np.sum(quiet.astype(np.float64) ** 2) / (0.01**2 * quiet.size))
    assert sig.weakest_event_snr_db(clean, noise) == pytest.approx(expected, abs=0.5)
    assert sig.weakest_event_snr_db(clean, noise * np.float32(10)) == pytest.approx(expected - 20, abs=0.5)


@pytest.mark.parametrize("family", ["beep_count", "louder_beeps", "event_position"])
def test_no_sound_is_masked_on_noisy_ood_items(family):
    """Every beep the chain cites stands 12 dB above the noise in its own frequency band, even at 0-5 dB.

    (Without the generator's floor on each sound's SNR, the quietest louder_beeps beeps sink to 8 dB.)
    """
    noisy = [it for it in _draw(family, "ood", N_OOD) if it.meta["corruption"]["kind"] != "speed"]
    assert noisy
    for item in noisy:
        x, meta = item.audio[0].astype(np.float64), item.meta
        freq = meta.get("beep_hz", meta.get("event_hz"))
        spans = (list(zip(meta["onsets_s"], meta["durations_s"])) if "onsets_s" in meta
                 else [(meta["event_onset_s"], meta["event_duration_s"])])
        env, times = m.band_envelope_db(x, freq)
        for onset, duration in spans:
            inside = (times > onset + 0.2 * duration) & (times < onset + 0.8 * duration)
            outside = np.all([(times < a - 0.03) | (times > a + d + 0.03) for a, d in spans], axis=0)
            rise = np.median(env[inside]) - np.median(env[outside])
            assert rise > 12.0, f"{family} {meta['corruption']}: beep at {onset:.2f} s only {rise:.1f} dB above noise"
