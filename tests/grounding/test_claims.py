"""Claim extraction and verification: hand-written chains with known facts, then the synthetic suite's own
grounded chains (no false claim), one-claim perturbations of them (each caught, by name), and the same
check against measurements of the audio when an item has no meta."""

import re

import numpy as np
import pytest

from mgrd.grounding.claims import TOLERANCES, extract_claims, facts_from_meta, verify_claims
from mgrd.grounding.measure import clip_facts, spectral_peaks_hz

from .suite import PERCEPTION_FAMILIES, SPEECH, perturb, rows


def _statuses(text, meta, measured=False):
    facts = meta if measured else facts_from_meta(meta)
    return {c.claim.text: c.status for c in verify_claims(extract_claims(text), facts, measured=measured)}


def test_numbers_units_ordinals_and_roles_are_read():
    claims = extract_claims("The first tone sits near 311 Hz and lasts 0.80 s; the second near 0.52 kHz. "
                            "It is centred at 450 ms of a 2.40 s clip, about 19% of the way through.")
    got = [(c.kind, c.dim, round(c.value, 6), c.index, c.role) for c in claims]
    assert got == [("quantity", "hz", 311.0, 0, None), ("quantity", "s", 0.8, 0, "duration"),
                   ("quantity", "hz", 520.0, 1, None), ("quantity", "s", 0.45, None, "time"),
                   ("quantity", "s", 2.4, None, "clip"), ("quantity", "percent", 19.0, None, None)]


def test_counts_comparisons_trends_contours_and_categories_are_read():
    text = ("I hear three beeps and a single 900 Hz click. The second is higher, the first one is longer. "
            "The level falls, so it is getting softer. Each note is lower than the one before; it ends lower "
            "than it starts. A minor third makes the chord minor; it is a sawtooth and happens in the middle.")
    kinds = [(c.kind, c.value, c.role) for c in extract_claims(text) if c.kind != "quantity"]
    assert kinds == [("count", 3.0, "beep"), ("count", 1.0, "click"), ("compare", "higher", "pitch"),
                     ("compare", "longer", "duration"), ("trend", "softer", "loudness"),
                     ("trend", "softer", "loudness"), ("contour", "down", "monotone"), ("contour", "down", "ends"),
                     ("category", "minor", "quality"), ("category", "minor", "quality"),
                     ("category", "sawtooth", "timbre"), ("category", "in the middle", "position")]


def test_quotes_references_and_rules_are_not_claims():
    text = ('The speaker says "I heard 3 beeps at 500 Hz." The voice sits near 180 Hz, above the roughly 140 Hz '
            "middle (about 120 Hz for a typical man). A major chord should get louder; if it were fast it would "
            "end higher. The answer is in the middle.")
    got = [(c.kind, c.text) for c in extract_claims(text)]
    assert got == [("quote", '"I heard 3 beeps at 500 Hz."'), ("quantity", "180 Hz"), ("bound", "140 Hz")]


def test_a_wrong_count_fails_and_the_right_one_holds():
    meta = {"count": 4, "beep_hz": 1000.0, "onsets_s": [0.2, 0.6, 1.0, 1.4]}
    assert _statuses("I hear three beeps.", meta) == {"three beeps": "contradicted"}
    assert _statuses("I hear 4 separate beeps, 1000 Hz each.", meta) == {"4 separate beeps": "supported",
                                                                         "1000 Hz": "supported"}


def test_a_wrong_direction_fails():
    meta = {"f0_hz": [311.1, 523.3], "durations_s": [0.8, 0.5]}
    assert _statuses("The first tone is higher.", meta) == {"The first tone is higher": "contradicted"}
    assert _statuses("The second tone is higher and the first is longer.", meta) == {
        "The second tone is higher": "supported", "the first is longer": "supported"}
    assert _statuses("the second one is lower", meta) == {"the second one is lower": "contradicted"}


def test_ordinals_bind_to_their_element():
    meta = {"f0_hz": [311.1, 523.3]}
    assert _statuses("The first near 523 Hz and the second near 311 Hz.", meta) == {
        "523 Hz": "contradicted", "311 Hz": "contradicted"}
    assert _statuses("The tones sit near 523 Hz and 311 Hz.", meta)["523 Hz and 311 Hz"] == "contradicted"


@pytest.mark.parametrize("claimed, fact, ok", [
    ("440 Hz", 452.0, True),  # 2.7 % off: within half a semitone
    ("440 Hz", 470.0, False),  # 6.4 % off
    ("0.35 s", 0.368, True),  # 18 ms: within 20 ms
    ("0.35 s", 0.45, False),
    ("12 dB", 13.4, True),  # within 1.5 dB
    ("12 dB", 14.0, False),
    ("3.3 per second", 3.2, True),
    ("3.5 per second", 3.2, False),  # rates: 5 % or 0.1, not Hz's 1.0
])
def test_tolerances(claimed, fact, ok):
    key = {"Hz": "f0_hz", "s": "duration_s", "dB": "change_db", "second": "note_rate_hz"}[claimed.split()[-1]]
    status = _statuses(f"It measures about {claimed}.", {key: fact})[claimed]
    assert status == ("supported" if ok else "contradicted")
    assert TOLERANCES["hz"] == (0.03, 1.0) and TOLERANCES["s"] == (0.05, 0.02)


BEEPS = {"count": 6, "beep_hz": 1000.0, "levels_db": [0.0, 7.0, -6.0, 9.0, -8.0, 5.0]}


def test_an_unbound_level_among_many_beeps_is_unverifiable():
    # +8 dB lies within 1.5 dB of two beeps and -4 dB within 1.5 dB of none: neither is a statement about
    # any one beep, so neither is supported, nor refuted
    checks = verify_claims(extract_claims("A beep sits near +8 dB and another near -4 dB."), facts_from_meta(BEEPS))
    assert [(c.claim.text, c.status) for c in checks] == [("+8 dB", "unverifiable"), ("-4 dB", "unverifiable")]
    assert "which of the 6 sounds" in checks[0].detail


def test_a_level_bound_to_its_beep_is_checked_against_that_beep():
    assert _statuses("The third beep is -6 dB.", BEEPS) == {"-6 dB": "supported"}
    assert _statuses("The third beep is +8 dB.", BEEPS) == {"+8 dB": "contradicted"}  # near beeps 2 and 4
    assert _statuses("Beep 3 is at -6 dB, beep 5 at +8 dB.", BEEPS) == {"-6 dB": "supported", "+8 dB": "contradicted"}
    assert _statuses("Taking the first as 0 dB, the last sits at +5 dB.", BEEPS) == {"0 dB": "supported",
                                                                                    "+5 dB": "supported"}


def test_levels_listed_after_the_first_are_checked_in_order():
    text = "Taking the first as 0 dB, the others sit at {} dB, so 3 of them are louder than the first."
    right = _statuses(text.format("+7 dB, -6 dB, +9 dB, -8 dB and +5"), BEEPS)
    assert set(right.values()) == {"supported"} and len(right) == 8
    swapped = _statuses(text.format("+9 dB, -6 dB, +7 dB, -8 dB and +5"), BEEPS)
    assert swapped["+9 dB, -6 dB, +7 dB, -8 dB and +5 dB"] == "contradicted"
    assert swapped["+9 dB"] == "unverifiable"  # alone, a member is no longer tied to a beep


def test_a_single_sound_level_is_unambiguous():
    meta = {"count": 1, "levels_db": [-4.0]}
    assert _statuses("The beep sits at -4 dB.", meta) == {"-4 dB": "supported"}
    assert _statuses("The beep sits at -9 dB.", meta) == {"-9 dB": "contradicted"}
    # a change of level is not one beep's level: scalar level facts still check unbound numbers
    assert _statuses("The level falls by about 10 dB.", {**BEEPS, "change_db": -9.9})["10 dB"] == "supported"


def test_sequences_are_checked_in_order():
    meta = {"notes_hz": [206.0, 245.0, 259.0]}
    assert _statuses("The notes go 206 Hz, 245 Hz and 259 Hz.", meta)["206 Hz, 245 Hz and 259 Hz"] == "supported"
    assert _statuses("The notes go 245 Hz, 206 Hz and 259 Hz.", meta)["245 Hz, 206 Hz and 259 Hz"] == "contradicted"


def test_bounds_trends_and_derived_facts():
    meta = {"note_rate_hz": 2.6, "change_db": -9.9, "tempo_bpm": [171.0, 125.0], "event_fraction": 0.19}
    got = _statuses("About 2.6 per second, fewer than four per second. The level falls by about 10 dB, so it gets "
                    "softer. The first pattern clicks every 0.35 s, about 19% of the way through.", meta)
    assert set(got.values()) == {"supported"} and len(got) == 7
    assert _statuses("Notes come more than four per second.", meta) == {"four per second": "contradicted"}
    assert _statuses("It is getting louder.", meta) == {"getting louder": "contradicted"}
    facts = facts_from_meta({**meta, "split": "train", "background": {"snr_db": 30.0}, "peak": 0.5})
    assert facts["tempo_period_s"] == pytest.approx([60 / 171, 60 / 125])
    assert facts["event_fraction_percent"] == pytest.approx(19.0)
    assert "background" not in facts and "peak" not in facts


def test_claims_without_a_fact_are_unverifiable():
    checks = verify_claims(extract_claims("It is near 440 Hz and a square wave."), {"count": 2})
    assert [c.status for c in checks] == ["unverifiable", "unverifiable"]


def test_every_grounded_chain_of_the_suite_is_true_and_every_one_claim_change_is_caught():
    rng = np.random.default_rng(0)
    for split in ("train", "ood"):
        for row, _ in rows(PERCEPTION_FAMILIES + (["spoken_arithmetic"] if SPEECH else []), split, 3, seed=11):
            facts = facts_from_meta(row["meta"])
            checks = verify_claims(extract_claims(row["reasonings"]["grounded"]), facts)
            false = [c.describe() for c in checks if c.status == "contradicted"]
            assert not false, (row["id"], false)
            assert sum(c.status == "supported" for c in checks) >= 1
            changed = perturb(row["reasonings"]["grounded"], row["meta"], rng)
            if changed is None:
                assert row["task"] == "spoken_arithmetic"
                continue
            chain, new = changed
            false = [c for c in verify_claims(extract_claims(chain), facts) if c.status == "contradicted"]
            assert any(new in c.claim.text or c.claim.text in new for c in false), (row["id"], chain)


@pytest.mark.parametrize("family", ["pitch_compare", "beep_count", "louder_beeps", "higher_longer"])
def test_without_meta_the_chain_is_checked_against_measurements(family):
    for row, clips in rows([family], "train", 4, seed=3):
        facts = clip_facts(clips[0])
        grounded = row["reasonings"]["grounded"]
        checks = verify_claims(extract_claims(grounded), facts, measured=True)
        assert not [c.describe() for c in checks if c.status == "contradicted"]
        assert sum(c.status == "supported" for c in checks) >= 2
        # one number made false: the first frequency moved to where nothing sounds (a harmonic tone's
        # overtones are real peaks too), or, when no frequency is cited, the beep count
        if " Hz" in grounded:
            first = float(re.search(r"(\d+) Hz", grounded).group(1))
            heard = [f for key in ("peaks_hz", "f0_hz") for f in facts.get(key, [])]
            moved = next(first * r for r in (1.19, 0.84, 1.41, 0.71)
                         if min(abs(first * r / f - 1) for f in heard) > 0.06)
            wrong = re.sub(r"(\d+) Hz", f"{moved:.0f} Hz", grounded, count=1)
        else:
            wrong = re.sub(r"There are (\d)", lambda m: f"There are {int(m.group(1)) + 2}", grounded)
        checks = verify_claims(extract_claims(wrong), facts, measured=True)
        assert [c.claim.kind for c in checks if c.status == "contradicted"] in (["quantity"], ["count"]), wrong


def _tone(freq, seconds, gain=1.0):
    t = np.arange(int(seconds * 16000)) / 16000
    return gain * np.sin(2 * np.pi * freq * t)


def test_spectral_peaks_resolve_a_low_minor_triad():
    chord = sum(_tone(f, 1.0) for f in (110.0, 130.81, 164.81)) / 3
    assert sorted(spectral_peaks_hz(chord)[:3]) == pytest.approx([110.0, 130.81, 164.81], abs=1.0)
    assert spectral_peaks_hz(np.zeros(16000)) == []


def test_clip_facts_of_two_tones_with_silence_around():
    gap = np.zeros(3200)  # 0.2 s
    clip = np.concatenate([gap, _tone(300.0, 0.5), gap, _tone(450.0, 0.3, 0.5), gap])
    facts = clip_facts(clip)
    assert facts["count"] == 2 and facts["clip_s"] == pytest.approx(1.4)
    assert facts["f0_hz"] == pytest.approx([300.0, 450.0], rel=0.005)
    assert facts["onsets_s"] == pytest.approx([0.2, 0.9], abs=0.01)
    assert facts["durations_s"] == pytest.approx([0.5, 0.3], abs=0.01)
    assert facts["levels_db"] == pytest.approx([0.0, -6.02], abs=0.3)  # half the amplitude


def test_measured_facts_get_wider_tolerances_and_tiny_trends_prove_nothing():
    text = "The tone lasts 0.56 s and is getting softer."
    claims = extract_claims(text)
    facts = {"durations_s": [0.5], "change_db": -1.0}
    # 60 ms off: beyond the 25 ms (5 %) for a fact from meta, within 25 + 20 + 25 ms for a measured one
    assert [c.status for c in verify_claims(claims, facts)] == ["contradicted", "supported"]
    assert [c.status for c in verify_claims(claims, facts, measured=True)] == ["supported", "unverifiable"]
    assert [c.status for c in verify_claims(claims, {"change_db": -2.5}, measured=True)][1] == "supported"


def test_a_noisy_clip_cannot_refute_times_and_levels():
    claims = extract_claims("The tone lasts 0.90 s and rises by 12 dB, so it is getting louder; it sits near 300 Hz.")
    clean = {"durations_s": [0.5], "change_db": 4.0, "f0_hz": [450.0], "snr": 30.0}
    assert [c.claim.text for c in verify_claims(claims, clean)] == ["0.90 s", "12 dB", "getting louder", "300 Hz"]
    assert [c.status for c in verify_claims(claims, clean, measured=True)] == [
        "contradicted", "contradicted", "supported", "contradicted"]
    noisy = dict(clean, snr=10.0)  # times, levels and the trend only confirm now; a pitch still refutes
    assert [c.status for c in verify_claims(claims, noisy, measured=True)] == ["unverifiable"] * 3 + ["contradicted"]
    assert verify_claims(claims, noisy)[0].status == "contradicted"  # meta knows no noise
    tone = _tone(440.0, 0.5)
    assert clip_facts(np.concatenate([np.zeros(1600), tone, np.zeros(1600)]))["snr"] > 60


def test_a_wider_tolerance_accepts_near_values_but_never_a_wrong_count():
    facts = facts_from_meta({"f0_hz": [210.0, 300.0], "durations_s": [0.4, 0.8], "count": 5})
    chain = "The first tone sits near 230 Hz and lasts 0.45 s. There are 6 beeps."
    strict = [c.status for c in verify_claims(extract_claims(chain), facts)]
    wide = [c.status for c in verify_claims(extract_claims(chain), facts, tolerance=4.0)]
    assert strict[:2] == ["contradicted", "contradicted"]  # 9.5 % and 50 ms off: beyond 3 % and 5 % / 20 ms
    assert wide[:2] == ["supported", "supported"]  # within 12 % and 20 % / 80 ms
    assert strict[2] == wide[2] == "contradicted"  # a count is exact at any tolerance
    bound = [c.status for c in verify_claims(extract_claims("The first tone sits near 290 Hz."), facts, tolerance=4.0)]
    assert bound == ["contradicted"]  # 290 is within 12 % of the second tone, but the claim is about the first
    assert [c.status for c in verify_claims(extract_claims("It sits near 600 Hz."), facts, tolerance=4.0)] == \
        ["contradicted"]
