"""Compositional acoustic families: each answer combines two or more heard facts by a rule.

A tiny model learns a single-fact task (which tone is higher) straight from log-mels, so single facts
cannot show that reasoning helps (DESIGN.md §6). These items need several facts at once, which is where a
chain that first states each fact ("the second is higher; the first is longer") can beat a direct answer:

- `higher_longer`: is the higher of two tones also the longer one? (pitch x duration, yes/no)
- `louder_beeps`: how many beeps are louder than the first? (count x level comparison, numeric)
- `contour_tempo`: does the melody end higher than it starts, and is it fast? (contour x rate, yes/no)
- `chord_louder`: is the chord major, and does it get louder? (harmony x loudness trend, yes/no)

Answers are balanced (yes/no each half the time; counts uniform over 0-4), and the single facts are kept
far enough from every decision threshold that noise, level and the ood speed change cannot flip them.
Rendering, noise, corruption, answers and chains go through `acoustic.finish()`, like the single-fact
families.
"""

from __future__ import annotations

import numpy as np

from mgrd.data.synth import signals as sig
from mgrd.data.synth.acoustic import (
    BEEP_HZ,
    FIRST_SECOND,
    PITCH_HZ,
    TONE_TIMBRES,
    YES_NO,
    beep_train,
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


def _two_conditions(rng: np.random.Generator) -> tuple[bool, bool]:
    """Truth values of two conditions such that "both hold" has probability 1/2."""
    if rng.random() < 0.5:
        return True, True
    return pick(rng, ((True, False), (False, True), (False, False)))


def _both(first: bool, second: bool) -> str:
    return "yes" if first and second else "no"


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
                  answer=rule, explain=explain, topic="whether the higher of two tones is also the longer one")


LOUDER_MAX = 4
LOUDER_QUESTIONS = ("How many of the beeps are louder than the first one?",
                    "Counting the beeps after the first, how many are louder than the first beep?",
                    "Compared with the first beep, how many of the other beeps are louder?")


def make_louder_beeps(rng: np.random.Generator, split: str) -> SynthItem:
    louder = int(rng.integers(0, LOUDER_MAX + 1))
    count = int(rng.integers(max(3, louder + 1), 7))
    # Louder beeps sit 5-10 dB above the first, the rest 5-10 dB below: far from "equal".
    others = np.concatenate([rng.uniform(5.0, 10.0, louder), -rng.uniform(5.0, 10.0, count - 1 - louder)])
    levels = np.concatenate([[0.0], rng.permutation(others)])
    freq = log_uniform(rng, *split_range(BEEP_HZ, split))
    beep_s = float(rng.uniform(0.1, 0.18))  # equal lengths, so energy differences are level differences
    clip, onsets, durations = beep_train(rng, freq, levels - 10.0, (beep_s, beep_s), (0.12, 0.25))
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
                  guesses=[str(k) for k in range(LOUDER_MAX + 1)])


FAST_NOTES_PER_S = 4.0
FAST_RATE, SLOW_RATE = (5.5, 7.0), (2.0, 3.0)  # notes per second; both clear of 4 under a 0.8-1.25x speed change
CONTOUR_TEMPO_QUESTIONS = (
    "Does the melody end higher than it starts, and is it fast (more than four notes per second)?",
    "Is the last note higher than the first, and does the melody move faster than four notes per second?",
    "Answer yes only if both hold: the melody ends higher than it begins, "
    "and it plays more than four notes per second.",
)


def _walk(rng: np.random.Generator, count: int, up: bool) -> np.ndarray:
    """Semitone offsets of a random melody (steps of 1-3 either way) ending 2+ semitones above/below its start."""
    while True:
        offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 4, count - 1) * rng.choice([-1, 1], count - 1))])
        if (offsets[-1] >= 2 and up) or (offsets[-1] <= -2 and not up):
            return offsets


def make_contour_tempo(rng: np.random.Generator, split: str) -> SynthItem:
    up, fast = _two_conditions(rng)
    count = int(rng.integers(4, 8))
    rate = rng.uniform(*(FAST_RATE if fast else SLOW_RATE))
    gap = 0.04 if fast else rng.uniform(0.05, 0.1)
    durations = np.full(count, 1.0 / rate - gap)
    clip, notes, onsets = melody(rng, split, _walk(rng, count, up), durations, np.full(count, gap),
                                 pick(rng, TONE_TIMBRES))
    facts = {"notes_hz": notes, "onsets_s": onsets, "durations_s": durations, "note_rate_hz": rate}

    def rule(f):
        return _both(f["notes_hz"][-1] > f["notes_hz"][0], f["note_rate_hz"] > FAST_NOTES_PER_S)

    def explain(f):
        first, last, rate_now = f["notes_hz"][0], f["notes_hz"][-1], f["note_rate_hz"]
        ends = "higher" if last > first else "lower"
        speed = "more" if rate_now > FAST_NOTES_PER_S else "fewer"
        verdict = "Both hold." if rule(f) == "yes" else "So the two conditions do not both hold."
        return (f"The melody starts near {first:.0f} Hz and ends near {last:.0f} Hz, so it ends {ends} than it starts. "
                f"Its notes come about {rate_now:.1f} per second, {speed} than four per second. {verdict}")

    return finish(rng, split, clip, facts, question=pick(rng, CONTOUR_TEMPO_QUESTIONS), choices=YES_NO, answer=rule,
                  explain=explain, topic="whether a melody ends higher than it starts and is also fast")


CHORD_LOUDER_QUESTIONS = ("Is the chord major, and does it get louder?",
                          "Is this a major chord that grows louder over time?",
                          "Answer yes only if both hold: the chord is major, and it gets louder.")


def make_chord_louder(rng: np.random.Generator, split: str) -> SynthItem:
    major, louder = _two_conditions(rng)
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
        return _both(f["quality"] == "major", f["change_db"] > 0)

    def explain(f):
        way, trend = ("rises", "louder") if f["change_db"] > 0 else ("falls", "softer")
        verdict = "Both hold." if rule(f) == "yes" else "So the two conditions do not both hold."
        return (f"{explain_chord(f)} Its level {way} by about {abs(f['change_db']):.0f} dB over "
                f"{f['duration_s']:.1f} s, so it gets {trend}. {verdict}")

    return finish(rng, split, clip, facts, question=pick(rng, CHORD_LOUDER_QUESTIONS), choices=YES_NO, answer=rule,
                  explain=explain, topic="whether a chord is major and also gets louder")


FAMILIES: list[Family] = [
    Family("higher_longer", "compositional", "choice", make_higher_longer,
           "two tones; is the higher one also the longer one (yes/no)"),
    Family("louder_beeps", "compositional", "numeric", make_louder_beeps,
           "3-6 beeps; how many are louder than the first (0-4)"),
    Family("contour_tempo", "compositional", "choice", make_contour_tempo,
           "a 4-7 note melody; does it end higher than it starts and play more than 4 notes/s (yes/no)"),
    Family("chord_louder", "compositional", "choice", make_chord_louder,
           "a ramped triad; is it major and getting louder (yes/no)"),
]
