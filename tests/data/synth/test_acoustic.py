"""Single-fact acoustic families: every stored answer is re-derived by measuring the wav read back from disk.

The measurements (`measure.py`) share no code with the generator. Clean items (train, test, and ood items
whose only corruption is a speed change) must agree on every answer and on the facts the grounded chain
cites; ood items under heavy noise must still agree on at least 90%. The rest covers what every family
(compositional ones too) gets from `acoustic.finish()`: balanced answers, questions that do not leak the
answer, blind text-substitute chains, disjoint train/test ranges and clip lengths.
"""

import re
from collections import Counter

import numpy as np
import pytest

from mgrd.data.synth import DEFAULT_FAMILIES, FAMILIES
from mgrd.data.synth.acoustic import FAMILIES as ACOUSTIC
from mgrd.data.synth.base import Family
from mgrd.data.synth.acoustic import round_floats, scale_facts
from mgrd.data.synth.writer import item_rng, synthesize

from . import measure as m
from .draws import draw

FIRST_SECOND = ["the first", "the second"]


def _close(measured, stored, rel=0.0, abs_=0.0) -> None:
    measured, stored = np.atleast_1d(measured).astype(float), np.atleast_1d(stored).astype(float)
    assert measured.shape == stored.shape, f"measured {measured} vs stored {stored}"
    tolerance = np.maximum(rel * np.abs(stored), abs_)
    assert np.all(np.abs(measured - stored) <= tolerance), f"measured {measured} vs stored {stored}"


# Each deriver measures a clip and returns (answer, measured facts); FACT_CHECKS compare the facts with meta.

def derive_pitch_compare(x):
    pitches = [p for _, _, p in m.tone_regions(x, 2)]
    return FIRST_SECOND[int(pitches[1] > pitches[0])], {"f0_hz": pitches}


def derive_beep_count(x):
    _, found = m.beeps(x)
    return str(len(found)), {"onsets_s": [a for a, _ in found]}


def derive_chord_quality(x):
    root, intervals = m.chord_intervals(x)
    return m.chord_quality(x), {"notes_hz": [root] + [root * 2 ** (i / 12) for i in intervals]}


def derive_melody_contour(x):
    pitches = [p for _, _, p in m.notes(x)]
    assert len(pitches) >= 3, f"expected 3-6 notes, found {pitches}"
    steps = np.diff(pitches)
    answer = "ascending" if np.all(steps > 0) else "descending" if np.all(steps < 0) else f"neither: {pitches}"
    return answer, {"notes_hz": pitches}


def derive_tempo_compare(x):
    _, found = m.beeps(x)
    onsets = np.array([a for a, _ in found])
    gaps = np.diff(onsets)
    split = int(np.argmax(gaps))  # the pause between the two patterns is the longest gap
    assert 1 <= split <= gaps.size - 2, f"no two click patterns in {onsets}"
    periods = [np.median(gaps[:split]), np.median(gaps[split + 1 :])]
    bpm = [60.0 / p for p in periods]
    return FIRST_SECOND[int(bpm[1] > bpm[0])], {"tempo_bpm": bpm}


def derive_loudness_trend(x):
    slope, _ = m.level_slope_db_per_s(x, m.peak_hz(x, 100.0, 7000.0))
    return ("louder" if slope > 0 else "softer"), {"slope_db_per_s": slope}


def derive_duration_compare(x):
    durations = [b - a for a, b, _ in m.tone_regions(x, 2)]
    return FIRST_SECOND[int(durations[1] > durations[0])], {"durations_s": durations}


def derive_timbre(x):
    f0, h2, h3, prominence = m.harmonic_levels_db(x)
    if prominence < 30:
        return "noise", {"f0_hz": None}
    if h2 < -25 and h3 < -25:
        return "sine", {"f0_hz": f0}
    return ("square" if h2 < -15 else "sawtooth"), {"f0_hz": f0}


def derive_event_position(x):
    env_freq = m.peak_hz(x, 300.0, 7000.0)
    found = m.band_segments(x, env_freq)
    assert len(found) == 1, f"expected one event, found {found}"
    start, end = found[0]
    centre = (start + end) / 2 / (x.size / m.RATE)
    answer = "near the beginning" if centre < 1 / 3 else "near the end" if centre > 2 / 3 else "in the middle"
    return answer, {"event_onset_s": start}


def _check_pitch_compare(facts, meta):
    _close(facts["f0_hz"], meta["f0_hz"], rel=0.01)


def _check_beep_count(facts, meta):
    _close(facts["onsets_s"], meta["onsets_s"], abs_=0.025)


def _check_chord(facts, meta):
    _close(facts["notes_hz"], meta["notes_hz"], rel=0.01)


def _check_melody(facts, meta):
    _close(facts["notes_hz"], meta["notes_hz"], rel=0.015)


def _check_tempo(facts, meta):
    _close(facts["tempo_bpm"], meta["tempo_bpm"], rel=0.05)


def _check_loudness(facts, meta):
    _close(facts["slope_db_per_s"], meta["change_db"] / meta["duration_s"], rel=0.25, abs_=1.0)


def _check_durations(facts, meta):
    # 64 ms analysis frames blur both ends of every tone alike, so the difference is what is exact.
    _close(np.diff(facts["durations_s"]), np.diff(meta["durations_s"]), abs_=0.03)


def _check_timbre(facts, meta):
    if meta["f0_hz"] is not None:
        _close(facts["f0_hz"], meta["f0_hz"], rel=0.01)


def _check_event(facts, meta):
    _close(facts["event_onset_s"], meta["event_onset_s"], abs_=0.03)


DERIVE = {
    "pitch_compare": (derive_pitch_compare, _check_pitch_compare),
    "beep_count": (derive_beep_count, _check_beep_count),
    "chord_quality": (derive_chord_quality, _check_chord),
    "melody_contour": (derive_melody_contour, _check_melody),
    "tempo_compare": (derive_tempo_compare, _check_tempo),
    "loudness_trend": (derive_loudness_trend, _check_loudness),
    "duration_compare": (derive_duration_compare, _check_durations),
    "timbre": (derive_timbre, _check_timbre),
    "event_position": (derive_event_position, _check_event),
}
NAMES = [f.name for f in ACOUSTIC]


def check_suite_by_measurement(derive: dict, out_dir, family: str, split: str, n: int, seed: int) -> list[str]:
    """Write a suite, measure every clip from disk; returns the corruption label of each disagreeing row.

    Clean rows (no noise corruption) must agree on the answer and on the cited facts; noisy ood rows only
    report disagreements, which the caller bounds.
    """
    deriver, check_facts = derive[family]
    manifest = synthesize(out_dir, n=n, seed=seed, families=[family], split=split, progress=False)
    misses = []
    for row, clip in m.read_rows(manifest):
        corruption = row["meta"]["corruption"]
        noisy = corruption is not None and corruption["kind"] != "speed"
        try:
            answer, facts = deriver(clip)
        except AssertionError as err:
            answer, facts = f"unmeasurable: {err}", None
        if noisy:
            if answer != row["answer"]:
                misses.append(f"{corruption['kind']}@{corruption['snr_db']}")
            continue
        assert answer == row["answer"], f"{row['id']} ({split}): stored {row['answer']!r}, measured {answer!r}"
        check_facts(facts, row["meta"])
    return misses


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
    assert len(misses) <= 0.1 * n, f"{len(misses)} of {n} noisy items disagree: {Counter(misses)}"


# ---- properties every family gets from finish() (single-fact and compositional alike) ---------------------

def _draw(family: str, split: str, count: int, seed: int = 0):
    return draw(family, split, count, seed)


@pytest.fixture(scope="module")
def train_items():
    return {name: _draw(name, "train", 120) for name in DEFAULT_FAMILIES}


def _options(family: str, items) -> list[str]:
    return items[0].choices or sorted({item.meta["substitute_answer"] for item in items} | {i.answer for i in items})


def test_registry_has_the_families():
    assert len(ACOUSTIC) >= 8
    for family in ACOUSTIC:
        assert re.fullmatch(r"[a-z][a-z_]+", family.name) and family.description
        assert family.kind == "acoustic" and family.grader in ("choice", "numeric")
        assert FAMILIES[family.name] is family


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_answers_are_balanced(family, train_items):
    items = train_items[family]
    options = _options(family, items)
    counts = Counter(item.answer for item in items)
    assert set(counts) <= set(options)
    for option in options:
        share = counts[option] / len(items)
        assert abs(share - 1 / len(options)) < 0.5 / len(options), f"{option!r}: {share:.2f} ({counts})"


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_question_wording_does_not_predict_the_answer(family, train_items):
    items = train_items[family]
    fit, held = items[::2], items[1::2]
    by_question: dict[str, Counter] = {}
    for item in fit:
        by_question.setdefault(item.question, Counter())[item.answer] += 1
    overall = Counter(item.answer for item in fit).most_common(1)[0][0]
    guess = {q: c.most_common(1)[0][0] for q, c in by_question.items()}
    accuracy = np.mean([guess.get(item.question, overall) == item.answer for item in held])
    assert accuracy < 1 / len(_options(family, items)) + 0.15, accuracy


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_reasoning_styles(family, train_items):
    items = train_items[family]
    numbers = re.compile(r"\d")
    for item in items:
        grounded, substitute = item.reasonings["grounded"], item.reasonings["text_substitute"]
        assert item.default_style == "grounded"
        assert grounded.endswith(f"The answer is {item.answer}.") and numbers.search(grounded)
        guess = item.meta["substitute_answer"]
        assert substitute.endswith(f"The answer is {guess}.")
        # No measured value: no number at all (a numeric guess may appear only as the guess itself).
        assert not numbers.search(substitute.replace(guess, "")), substitute
        assert not re.search(r"\b(Hz|dB|BPM)\b", substitute), substitute
    hits = np.mean([item.meta["substitute_answer"] == item.answer for item in items])
    assert abs(hits - 1 / len(_options(family, items))) < 0.15, f"text-substitute accuracy {hits:.2f}"


SPLIT_KEYS = {  # the parameter whose train and test ranges must not overlap
    "pitch_compare": "f0_hz", "beep_count": "beep_hz", "chord_quality": "notes_hz", "melody_contour": "notes_hz",
    "tempo_compare": "tempo_bpm", "loudness_trend": "carrier_hz", "duration_compare": "durations_s", "timbre": "f0_hz",
    "event_position": "event_hz", "higher_longer": "f0_hz", "louder_beeps": "beep_hz", "contour_tempo": "notes_hz",
    "chord_louder": "notes_hz",
}


def _values(items, key) -> np.ndarray:
    values = [np.atleast_1d(item.meta[key]) for item in items if item.meta[key] is not None]
    return np.concatenate(values).astype(float)


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_train_and_test_ranges_are_disjoint(family, train_items):
    key = SPLIT_KEYS[family]
    train, test = _values(train_items[family], key), _values(_draw(family, "test", 60), key)
    ranges = f"{key}: train {train.min()}-{train.max()}, test {test.min()}-{test.max()}"
    assert train.max() < test.min() or test.max() < train.min(), ranges


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_dev_items_are_new_items_of_the_training_ranges(family, train_items):
    key = SPLIT_KEYS[family]
    train, dev = _values(train_items[family], key), _values(_draw(family, "dev", 60), key)
    slack = 0.1 * (train.max() - train.min())  # two samples of one range: their extremes differ a little
    assert train.min() - slack <= dev.min() and dev.max() <= train.max() + slack, f"{key}: dev {dev.min()}-{dev.max()}"
    test = _values(_draw(family, "test", 60), key)
    assert dev.max() < test.min() or test.max() < dev.min()
    dev_clips = {item.audio[0][:64].tobytes() for item in _draw(family, "dev", 20)}
    assert not dev_clips & {item.audio[0][:64].tobytes() for item in train_items[family]}


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_clips_are_short_float32_and_normalised(family, train_items):
    for item in train_items[family][:40]:
        (clip,) = item.audio
        assert clip.dtype == np.float32 and clip.ndim == 1
        assert 0.5 <= clip.size / m.RATE <= 4.0
        assert 0.25 < np.abs(clip).max() <= 0.95 + 1e-6
        assert item.meta["background"]["kind"] in ("white", "pink") and item.meta["corruption"] is None


def test_ood_items_record_their_corruption():
    kinds, snrs = Counter(), set()
    for family in ("pitch_compare", "beep_count", "timbre"):
        for item in _draw(family, "ood", 60):
            corruption = item.meta["corruption"]
            kinds[corruption["kind"]] += 1
            if corruption["kind"] == "speed":
                assert corruption["factor"] != 1.0
            else:
                snrs.add(corruption["snr_db"])
    assert set(kinds) == {"white", "babble", "speed"} and len(snrs) >= 3


def test_speed_change_rescales_facts_by_unit_suffix():
    facts = {"f0_hz": [200.0, 300.0], "tempo_bpm": 120.0, "onsets_s": [[0.5, 1.0]], "levels_db": [3.0],
             "count": 4, "fast": True, "timbre": "sine", "corruption": {"clip_s": 2.0}}
    scaled = scale_facts(facts, 1.25)
    assert scaled == {"f0_hz": [250.0, 375.0], "tempo_bpm": 150.0, "onsets_s": [[0.4, 0.8]], "levels_db": [3.0],
                      "count": 4, "fast": True, "timbre": "sine", "corruption": {"clip_s": 1.6}}
    assert round_floats({"a": np.float32(0.123456), "b": [np.int64(3), np.bool_(True)]}) == {"a": 0.123, "b": [3, True]}


@pytest.mark.parametrize("split", ["train", "ood"])
def test_event_position_chain_quotes_the_centre_it_measures(split):
    """The chain's time, clip length and percentage are one consistent quantity (the centre), and true."""
    pattern = re.compile(r"centred at ([\d.]+) s of a ([\d.]+) s clip, about (\d+)% of the way")
    for item in _draw("event_position", split, 30):
        centre, clip_s, percent = pattern.search(item.reasonings["grounded"]).groups()
        centre, clip_s, x = float(centre), float(clip_s), item.audio[0].astype(np.float64)
        assert abs(100 * centre / clip_s - int(percent)) <= 1.0, item.reasonings["grounded"]
        assert abs(clip_s - x.size / m.RATE) < 0.01
        (start, end), = m.band_segments(x, item.meta["event_hz"])
        assert abs((start + end) / 2 - centre) < 0.02, (start, end, item.reasonings["grounded"])


def test_family_grader_may_be_exact_and_bad_values_are_refused():
    def make(rng, split):
        raise AssertionError("not drawn")

    assert Family("spoken_word", "speech", "exact", make).grader == "exact"
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'"):
        Family("x", "acoustic", "fuzzy", make)
    with pytest.raises(ValueError, match="unknown kind 'video'"):
        Family("x", "video", "choice", make)
