"""Compositional acoustic families: each answer combines two or more heard facts by a rule.

A tiny model learns a single-fact task (which tone is higher) straight from log-mels, so single facts
cannot show that reasoning helps (DESIGN.md §6). These items need several facts at once, which is where a
chain that first states each fact ("the second is higher; the first is longer") can beat a direct answer:

- `higher_longer`: is the higher of two tones also the longer one? (pitch x duration, yes/no)
- `louder_beeps`: how many beeps are louder than the first? (count x level comparison, numeric)
- `contour_tempo`: fast melodies should end higher than they start and slow ones lower; does this one
  follow the rule? (contour x rate, yes/no)
- `chord_louder`: major chords should get louder and minor ones softer; does this one? (harmony x
  loudness trend, yes/no)

Every rule needs all of its facts: the yes/no rules are equalities of two independent fair facts, so each
fact alone predicts the answer at chance (a "both hold" rule would not: "major" alone would be right 5
times in 6), and `louder_beeps` is a conditional count whose number of beeps does not depend on the answer.
Answers are balanced (yes/no each half the time; counts uniform over 0-4), the single facts are kept far
enough from every decision threshold that noise, level and the ood speed change cannot flip them, and
neither the clip length nor its level statistics (RMS, peak, crest factor) follow the answer.
Rendering, noise, corruption, answers and chains go through `acoustic.finish()`, like the single-fact
families.
"""

from __future__ import annotations

import numpy as np

from mgrd.data.synth import signals as sig
from mgrd.data.synth.acoustic import (
    BEEP_HZ,
    EDGE_LOSS_S,
    CHORD_ROOT_HZ,
    FIRST_SECOND,
    MELODY_HZ,
    PITCH_HZ,
    TONE_TIMBRES,
    YES_NO,
    beep_train,
    budget_durations,
    chord_notes,
    explain_chord,
    finish,
    join,
    log_uniform,
    melody,
    pick,
    ramped,
    semitones_up,
    split_range,
    two_sounds,
)
from mgrd.data.synth.base import Family, SynthItem


def _two_facts(rng: np.random.Generator) -> tuple[bool, bool]:
    """Two independent fair facts: "they agree" is then a fair answer that neither fact predicts alone."""
    return bool(rng.random() < 0.5), bool(rng.random() < 0.5)


def _agree(first: bool, second: bool) -> str:
    return "yes" if first == second else "no"


HIGHER_LONGER_QUESTIONS = ("Is the higher of the two tones also the longer one?",
                           "Is the higher-pitched tone also the one that lasts longer?",
                           "Of the two tones, is the higher one also held longer?")


def make_higher_longer(rng: np.random.Generator, split: str) -> SynthItem:
    same = rng.random() < 0.5
    lo, hi = split_range(PITCH_HZ, split)
    interval = rng.uniform(2.0, 12.0)
    low = log_uniform(rng, lo, hi / 2.0 ** (interval / 12.0))
    higher = int(rng.integers(2))
    f0 = [low, low]
    f0[higher] = semitones_up(low, interval)
    ratio = rng.uniform(1.4, 2.5)
    short = rng.uniform(0.25, 0.9 / ratio)
    durations = [short, short]
    durations[higher if same else 1 - higher] = short * ratio
    timbre = pick(rng, TONE_TIMBRES)
    tones = [sig.note(f, d, timbre, rng, g) for f, d, g in zip(f0, durations, rng.uniform(-4.0, 4.0, 2))]
    clip, onsets = two_sounds(rng, tones[0], tones[1], float(rng.uniform(0.25, 0.4)))
    facts = {"f0_hz": f0, "durations_s": durations, "onsets_s": onsets, "timbre": timbre}

    def rule(f):
        return "yes" if np.argmax(f["f0_hz"]) == np.argmax(f["durations_s"]) else "no"

    def explain(f):
        (f1, f2), (d1, d2) = f["f0_hz"], f["durations_s"]
        hi_idx, long_idx = int(f2 > f1), int(d2 > d1)
        verdict = "is also" if hi_idx == long_idx else "is not"
        return (f"The first tone is near {f1:.0f} Hz and lasts {d1:.2f} s; the second is near {f2:.0f} Hz and lasts "
                f"{d2:.2f} s. {FIRST_SECOND[hi_idx].capitalize()} is higher and {FIRST_SECOND[long_idx]} is longer, "
                f"so the higher tone {verdict} the longer one.")

    return finish(rng, split, clip, facts, question=pick(rng, HIGHER_LONGER_QUESTIONS), choices=YES_NO,
                  answer=rule, explain=explain, topic="whether the higher of two tones is also the longer one",
                  shift=("f0_hz", PITCH_HZ["train"]))


LOUDER_MAX = 4
LOUDER_QUESTIONS = ("How many of the beeps are louder than the first one?",
                    "Counting the beeps after the first, how many are louder than the first beep?",
                    "Compared with the first beep, how many of the other beeps are louder?")


def make_louder_beeps(rng: np.random.Generator, split: str) -> SynthItem:
    louder = int(rng.integers(0, LOUDER_MAX + 1))
    count = int(rng.integers(LOUDER_MAX + 1, LOUDER_MAX + 3))  # 5 or 6 whatever the answer
    # Louder beeps sit 5-10 dB above the first, the rest 5-10 dB below: far from "equal".
    others = np.concatenate([rng.uniform(5.0, 10.0, louder), -rng.uniform(5.0, 10.0, count - 1 - louder)])
    levels = np.concatenate([[0.0], rng.permutation(others)])
    freq = log_uniform(rng, *split_range(BEEP_HZ, split))
    # Equal lengths (energy differences are level differences), set by an energy budget so that the
    # clip's crest factor does not follow how many beeps are loud.
    durations = budget_durations(levels, np.ones(count), float(rng.uniform(0.25, 0.4)))
    clip, onsets, durations = beep_train(rng, freq, levels - 10.0, durations, rng.uniform(0.1, 0.2, count - 1),
                                         float(rng.uniform(3.0, 3.6)))
    facts = {"count": count, "levels_db": levels, "beep_hz": freq, "onsets_s": onsets, "durations_s": durations}

    def rule(f):
        return str(sum(level > 0 for level in f["levels_db"][1:]))

    def explain(f):
        rest = join([f"{level:+.0f} dB" for level in f["levels_db"][1:]])
        louder = rule(f)
        verb = "is" if louder == "1" else "are"
        return (f"There are {f['count']} beeps. Taking the first as 0 dB, the others sit at {rest}, "
                f"so {louder} of them {verb} louder than the first.")

    return finish(rng, split, clip, facts, question=pick(rng, LOUDER_QUESTIONS), choices=None, answer=rule,
                  explain=explain, topic="how many beeps are louder than the first",
                  guesses=[str(k) for k in range(LOUDER_MAX + 1)], shift=("beep_hz", BEEP_HZ["train"]))


FAST_NOTES_PER_S = 4.0
FAST_RATE, SLOW_RATE = (5.5, 7.0), (2.0, 3.0)  # notes per second; both clear of 4 under a 0.8-1.25x speed change
MELODY_SPAN_ST = 14  # widest melody in semitones: fits the narrowest split range (18 semitones)
CONTOUR_TEMPO_QUESTIONS = (
    "Fast melodies (more than four notes per second) should end higher than they start, and slow ones lower. "
    "Does this melody follow that rule?",
    "Here a melody that plays more than four notes per second should end higher than it begins, "
    "and a slower one should end lower. Does this one?",
    "Answer yes if the melody is fast (more than four notes per second) and ends higher than it starts, "
    "or slow and ends lower; otherwise answer no.",
)


def _walk(rng: np.random.Generator, count: int, up: bool) -> np.ndarray:
    """Semitone offsets of a random melody (steps of 1-2 either way, at most `MELODY_SPAN_ST` wide) ending
    2+ semitones above (`up`) or below its start."""
    while True:
        offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 3, count - 1) * rng.choice([-1, 1], count - 1))])
        ends_right = offsets[-1] >= 2 if up else offsets[-1] <= -2
        if ends_right and np.ptp(offsets) <= MELODY_SPAN_ST:
            return offsets


def make_contour_tempo(rng: np.random.Generator, split: str) -> SynthItem:
    up, fast = _two_facts(rng)
    rate = rng.uniform(*(FAST_RATE if fast else SLOW_RATE))
    # The melody lasts about as long at either speed (a fast one has more notes), in a clip whose length is
    # drawn on its own, and every note sounds at full level for the same share of its period (its fades
    # counted): neither the clip length nor its level statistics tell a fast melody from a slow one.
    count = max(3, int(round(rng.uniform(1.5, 2.1) * rate)))
    note_s = rng.uniform(0.58, 0.68) / rate + EDGE_LOSS_S
    gap = 1.0 / rate - note_s
    durations = np.full(count, note_s)
    clip, notes, onsets = melody(rng, split, _walk(rng, count, up), durations, np.full(count, gap),
                                 pick(rng, TONE_TIMBRES), total_s=float(rng.uniform(2.5, 3.1)))
    facts = {"notes_hz": notes, "onsets_s": onsets, "durations_s": durations, "note_rate_hz": rate}

    def rule(f):
        return _agree(f["notes_hz"][-1] > f["notes_hz"][0], f["note_rate_hz"] > FAST_NOTES_PER_S)

    def explain(f):
        first, last, rate_now = f["notes_hz"][0], f["notes_hz"][-1], f["note_rate_hz"]
        ends = "higher" if last > first else "lower"
        speed, pace, should = (("more", "fast", "higher") if rate_now > FAST_NOTES_PER_S
                               else ("fewer", "slow", "lower"))
        verdict = "so it follows the rule" if rule(f) == "yes" else "so it does not follow the rule"
        return (f"The melody starts near {first:.0f} Hz and ends near {last:.0f} Hz, so it ends {ends} than it starts. "
                f"Its notes come about {rate_now:.1f} per second, {speed} than four per second, so it is {pace}. "
                f"A {pace} melody should end {should}; this one ends {ends}, {verdict}.")

    return finish(rng, split, clip, facts, question=pick(rng, CONTOUR_TEMPO_QUESTIONS), choices=YES_NO, answer=rule,
                  explain=explain, topic="whether a melody follows a rule linking its direction to its speed",
                  shift=("notes_hz", MELODY_HZ["train"]))


CHORD_LOUDER_QUESTIONS = (
    "Major chords should get louder and minor chords softer. Does this chord follow that rule?",
    "Here a major chord should grow louder over time and a minor one softer. Does this one?",
    "Answer yes if the chord is major and gets louder, or minor and gets softer; otherwise answer no.",
)


def make_chord_louder(rng: np.random.Generator, split: str) -> SynthItem:
    major, louder = _two_facts(rng)
    quality = "major" if major else "minor"
    notes = chord_notes(rng, split, quality)
    duration = float(rng.uniform(1.2, 2.0))
    change = rng.uniform(8.0, 18.0) * (1 if louder else -1)
    wave, start, end = ramped(sig.chord(notes, duration, rng), change)
    lead = float(rng.uniform(0.05, 0.25))
    clip = sig.place([(lead, wave)], lead + duration + float(rng.uniform(0.05, 0.25)))
    facts = {"quality": quality, "notes_hz": notes, "start_db": start, "end_db": end, "change_db": end - start,
             "onset_s": lead, "duration_s": duration}

    def rule(f):
        return _agree(f["quality"] == "major", f["change_db"] > 0)

    def explain(f):
        way, trend = ("rises", "louder") if f["change_db"] > 0 else ("falls", "softer")
        should = "louder" if f["quality"] == "major" else "softer"
        verdict = "so it follows the rule" if rule(f) == "yes" else "so it does not follow the rule"
        return (f"{explain_chord(f)} Its level {way} by about {abs(f['change_db']):.0f} dB over "
                f"{f['duration_s']:.1f} s, so it gets {trend}. A {f['quality']} chord should get {should}; "
                f"this one gets {trend}, {verdict}.")

    return finish(rng, split, clip, facts, question=pick(rng, CHORD_LOUDER_QUESTIONS), choices=YES_NO, answer=rule,
                  explain=explain, topic="whether a chord follows a rule linking its quality to its loudness",
                  shift=("notes_hz", CHORD_ROOT_HZ["train"]))


FAMILIES: list[Family] = [
    Family("higher_longer", "compositional", "choice", make_higher_longer,
           "two tones; is the higher one also the longer one (yes/no)"),
    Family("louder_beeps", "compositional", "numeric", make_louder_beeps,
           "5-6 beeps; how many are louder than the first (0-4)"),
    Family("contour_tempo", "compositional", "choice", make_contour_tempo,
           "a melody; fast ones (over 4 notes/s) should end higher, slow ones lower; does it (yes/no)"),
    Family("chord_louder", "compositional", "choice", make_chord_louder,
           "a ramped triad; major ones should get louder, minor ones softer; does it (yes/no)"),
]
