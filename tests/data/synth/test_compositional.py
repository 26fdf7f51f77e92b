"""Compositional families: each answer re-derived from facts measured in the wav read back from disk.

Every single fact (which tone is higher, which is longer, each beep's level, the melody's first and last
pitch and its note rate, the chord's third, the level trend) is measured with `measure.py`, then combined by
the family's rule as written in its question. The rule is applied here, independently of the generator.
"""

import numpy as np
import pytest

from mgrd.data.synth import FAMILIES
from mgrd.data.synth.compositional import FAMILIES as COMPOSITIONAL
from mgrd.data.synth.writer import item_rng

from . import measure as m
from .test_acoustic import _close, check_suite_by_measurement


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def derive_higher_longer(x):
    tones = m.tone_regions(x, 2)
    pitches, durations = [p for _, _, p in tones], [b - a for a, b, _ in tones]
    return _yes(np.argmax(pitches) == np.argmax(durations)), {"f0_hz": pitches, "durations_s": durations}


def derive_louder_beeps(x):
    freq, found = m.beeps(x, below_peak_db=26.0)  # beeps span 20 dB, so look further below the loudest
    levels = [m.band_level_db(x, freq, a, b) for a, b in found]
    relative = [level - levels[0] for level in levels]
    return str(sum(r > 0 for r in relative[1:])), {"levels_db": relative}


def derive_contour_tempo(x):
    found = m.notes(x)
    assert len(found) >= 2, f"expected a melody, found {found}"
    pitches, onsets = [p for _, _, p in found], [a for a, _, _ in found]
    rate = 1.0 / np.median(np.diff(onsets))
    return _yes((pitches[-1] > pitches[0]) == (rate > 4.0)), {"notes_hz": pitches, "note_rate_hz": rate}


def derive_chord_louder(x):
    quality = m.chord_quality(x)
    root, _ = m.chord_intervals(x)
    slope, _ = m.level_slope_db_per_s(x, root)
    return _yes((quality == "major") == (slope > 0)), {"quality": quality, "slope_db_per_s": slope}


def _check_higher_longer(facts, meta):
    _close(facts["f0_hz"], meta["f0_hz"], rel=0.01)
    _close(np.diff(facts["durations_s"]), np.diff(meta["durations_s"]), abs_=0.03)


def _check_louder_beeps(facts, meta):
    _close(facts["levels_db"], meta["levels_db"], abs_=1.5)


def _check_contour_tempo(facts, meta):
    _close(facts["notes_hz"], meta["notes_hz"], rel=0.015)
    _close(facts["note_rate_hz"], meta["note_rate_hz"], rel=0.05)


def _check_chord_louder(facts, meta):
    assert facts["quality"] == meta["quality"]
    _close(facts["slope_db_per_s"], meta["change_db"] / meta["duration_s"], rel=0.25, abs_=1.0)


DERIVE = {
    "higher_longer": (derive_higher_longer, _check_higher_longer),
    "louder_beeps": (derive_louder_beeps, _check_louder_beeps),
    "contour_tempo": (derive_contour_tempo, _check_contour_tempo),
    "chord_louder": (derive_chord_louder, _check_chord_louder),
}
NAMES = [f.name for f in COMPOSITIONAL]


def test_registry_has_the_families():
    assert len(COMPOSITIONAL) >= 3 and set(NAMES) == set(DERIVE)
    for family in COMPOSITIONAL:
        assert family.kind == "compositional" and family.grader in ("choice", "numeric") and family.description


@pytest.mark.parametrize("family", NAMES)
def test_answers_match_measurement(family, tmp_path):
    for split in ("train", "test"):
        assert check_suite_by_measurement(DERIVE, tmp_path / split, family, split, n=8, seed=11) == []


@pytest.mark.integration
@pytest.mark.parametrize("family", NAMES)
def test_answers_match_measurement_many_seeds(family, tmp_path):
    for seed in (0, 1, 2):
        for split in ("train", "test"):
            check_suite_by_measurement(DERIVE, tmp_path / f"{split}{seed}", family, split, n=30, seed=seed)


@pytest.mark.integration
@pytest.mark.parametrize("family", NAMES)
def test_ood_answers_survive_corruption(family, tmp_path):
    n = 120
    misses = check_suite_by_measurement(DERIVE, tmp_path, family, "ood", n=n, seed=5)
    assert len(misses) <= 0.1 * n, misses


@pytest.mark.parametrize("family, facts", [
    ("chord_louder", lambda meta: (meta["quality"], meta["change_db"] > 0)),
    ("contour_tempo", lambda meta: (meta["notes_hz"][-1] > meta["notes_hz"][0], meta["note_rate_hz"] > 4)),
    ("higher_longer", lambda meta: (int(np.argmax(meta["f0_hz"])), int(np.argmax(meta["durations_s"])))),
])
def test_every_combination_of_facts_occurs(family, facts):
    """The facts vary on their own, so a "no" can fail the rule in every way and no single fact decides it."""
    combos = [facts(FAMILIES[family].make(item_rng(0, family, "train", i), "train").meta) for i in range(80)]
    assert len(set(combos)) == 4, set(combos)
