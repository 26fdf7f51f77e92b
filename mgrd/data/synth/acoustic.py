"""Single-fact acoustic task families: each question needs one thing heard in the clip.

Nine families (pitch, beep count, chord quality, melody contour, tempo, loudness trend, duration, timbre,
event position). Each draws its parameters from a seeded generator, renders one clip with the blocks in
`signals.py`, and hands the clip and its ground-truth facts to `finish()`, which every family (the
compositional ones too) shares:

- mild background noise (white or pink, 20-35 dB SNR) and a random overall level (peak 0.3-0.95), so no
  task is solved by a silence or level detector;
- for the `ood` split, one corruption, recorded in `meta["corruption"]`: white or babble noise at 15/10/5/0 dB
  SNR (all below the training background; raised to the next level when a sound of the clip would sink
  below 0 dB SNR of its own, so the grounded chain never cites a masked sound), or a speed change of
  0.8-1.25x in the direction that moves the family's split parameter further from its training range. A
  speed change rescales the facts by key suffix (`*_hz` and `*_bpm` times the factor, `*_s` divided by it)
  so `meta` always describes the audio as written;
- the answer, computed by the family's rule from the (final, rounded) facts;
- two reasoning chains: *grounded* (cites the measured facts) and *text_substitute* (argues from the
  wording and priors only, names no measured value, and picks an option independently of the audio, so it
  is right at chance rate; its pick is kept in `meta["substitute_answer"]`).

Train and test draw the defining parameter from disjoint ranges (frequency, tempo or duration, see each
family); `ood` uses the test ranges plus the corruption; `dev` draws new items exactly as train does (held-out
items of the training distribution). Answers are drawn uniformly over the options, and
choice lists have a fixed order, so neither wording nor position tells the answer. Nor do trivial clip
properties: clip length, RMS, peak and crest factor are drawn independently of the answer (beep rows share
a fixed energy budget and sit in clips of random length; the timbre family randomises harmonic phases and
draws its crest factor; fast and slow melodies last equally long), which `tests/data/synth/test_shortcuts.py`
checks with trivial-feature classifiers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mgrd.data.synth import signals as sig
from mgrd.data.synth.base import Family, SynthItem

TONE_TIMBRES = ("sine", "square", "sawtooth")
FIRST_SECOND = ["the first", "the second"]
YES_NO = ["yes", "no"]
BACKGROUND_SNR_DB = (20.0, 35.0)
OOD_SNRS_DB = (15.0, 10.0, 5.0, 0.0)  # every one strictly below the training background range
OOD_SPEEDS = (0.8, 0.9, 1.1, 1.25)  # an item uses those that move its split parameter away from training
EVENT_SNR_FLOOR_DB = 0.0  # no sound of an ood clip is buried deeper than this under the corruption noise
OOD_KINDS = ("white", "babble", "speed")
PEAK_RANGE = (0.3, 0.95)

_OPENERS = (
    "The question asks {topic}.",
    "Going by the question alone, it is about {topic}.",
    "This asks {topic}.",
)
_PRIORS = (
    "Questions phrased like this most often have {pick} as the answer, so I will go with that.",
    "Nothing in the wording rules out {pick}, and it is the usual answer to this kind of question.",
    "From the way such questions are usually written, {pick} seems the most likely option.",
    "As a general rule for clips like this, {pick} is the safer guess.",
)


# ---- small helpers shared with compositional.py -------------------------------------------------------


def pick(rng: np.random.Generator, options):
    """One element of a sequence, drawn uniformly (as a plain Python value)."""
    return options[int(rng.integers(len(options)))]


def split_range(ranges: dict[str, tuple[float, float]], split: str) -> tuple[float, float]:
    """The parameter range for a split: `ood` shares the test range."""
    return ranges["test" if split in ("test", "ood") else "train"]


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A value spread evenly on a log scale (musical intervals are ratios)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def semitones_up(freq_hz: float, steps: float) -> float:
    return float(freq_hz * 2.0 ** (steps / 12.0))


def hz(x: float) -> str:
    """A frequency as the chains cite it."""
    return f"{x:.0f} Hz"


def join(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def scale_facts(facts, factor: float):
    """Facts after a speed change by `factor`: `*_hz`/`*_bpm` scale up, `*_s` scale down, others stay.

    Lists, tuples and numpy arrays are scaled element by element (and come back as lists); numbers of any
    numeric type (numpy scalars included, booleans excluded) are scaled; anything else is kept.
    """
    def scaled(value, mult):
        if isinstance(value, (list, tuple, np.ndarray)):
            return [scaled(v, mult) for v in value]
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            return float(value) * mult
        return value

    out = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            out[key] = scale_facts(value, factor)
        elif key.endswith(("_hz", "_bpm")):
            out[key] = scaled(value, factor)
        elif key.endswith("_s"):
            out[key] = scaled(value, 1.0 / factor)
        else:
            out[key] = value
    return out


def round_floats(value, digits: int = 3):
    """A JSON-ready copy with every float rounded (numpy scalars become Python numbers)."""
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [round_floats(v, digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), digits)
    return value


def substitute_chain(rng: np.random.Generator, topic: str, options: list[str]) -> tuple[str, str]:
    """A text-substitute chain: argues from wording and priors, picks an option blind to the audio.

    Returns:
        (chain, picked option); the chain ends with "The answer is <pick>." and names no measurement.
    """
    guess = pick(rng, options)
    chain = f"{pick(rng, _OPENERS).format(topic=topic)} {pick(rng, _PRIORS).format(pick=guess)}"
    return f"{chain} The answer is {guess}.", guess


def _background(rng: np.random.Generator, clip: np.ndarray) -> tuple[np.ndarray, dict]:
    kind = pick(rng, ("white", "pink"))
    snr = float(rng.uniform(*BACKGROUND_SNR_DB))
    return sig.mix_at_snr(clip, sig.noise(kind, clip.size, rng), snr), {"kind": kind, "snr_db": round(snr, 2)}


def away_speeds(facts: dict, shift: tuple[str, tuple[float, float]] | None) -> tuple[float, ...]:
    """The `OOD_SPEEDS` that move the split parameter further from its training range.

    Args:
        facts: the item's facts.
        shift: (key of the split parameter in `facts`, its training range), or None when no parameter of the
            family has split-dependent ranges (every speed is allowed then).
    Returns:
        The speeds above 1 when a speed-up moves the values away from the training range (a `*_hz` or
        `*_bpm` key above it, or a `*_s` key below it), else those below 1.
    """
    values = [v for v in np.ravel(np.asarray(facts[shift[0]], dtype=object)) if v is not None] if shift else []
    if not values:
        return OOD_SPEEDS
    above = float(values[0]) > shift[1][1]
    up = above != shift[0].endswith("_s")  # a speed-up raises *_hz and *_bpm and shortens *_s
    return tuple(f for f in OOD_SPEEDS if (f > 1.0) == up)


def _corrupt(rng: np.random.Generator, clip: np.ndarray, clean: np.ndarray,
             speeds: tuple[float, ...]) -> tuple[np.ndarray, dict]:
    """One ood corruption of `clip` (`clean` is the clip before its background noise).

    A noise corruption draws its SNR from `OOD_SNRS_DB`, then moves up to the next listed SNR as long as some
    sound of the clean clip would sit below `EVENT_SNR_FLOOR_DB` (masked: the grounded chain could no longer
    claim it); the highest listed SNR is used when none keeps every sound audible.
    """
    kind = pick(rng, OOD_KINDS)
    if kind == "speed":
        factor = pick(rng, speeds)
        return sig.change_speed(clip, factor), {"kind": "speed", "factor": factor}
    drawn = pick(rng, OOD_SNRS_DB)
    unit = sig.noise(kind, clip.size, rng)
    unit = unit * np.float32(sig.rms(clip) / max(sig.rms(unit), 1e-12))  # 0 dB SNR against the whole clip
    audible = [s for s in sorted(OOD_SNRS_DB) if s >= drawn
               and sig.weakest_event_snr_db(clean, unit * np.float32(sig.db_to_amp(-s))) >= EVENT_SNR_FLOOR_DB]
    snr = audible[0] if audible else max(OOD_SNRS_DB)
    return sig.mix_at_snr(clip, unit, snr), {"kind": kind, "snr_db": snr}


def finish(
    rng: np.random.Generator,
    split: str,
    clip: np.ndarray,
    facts: dict,
    *,
    question: str,
    choices: list[str] | None,
    answer: Callable[[dict], str],
    explain: Callable[[dict], str],
    topic: str,
    guesses: list[str] | None = None,
    shift: tuple[str, tuple[float, float]] | None = None,
    crest_db: tuple[float, float] | None = None,
) -> SynthItem:
    """Turn a clean clip and its facts into an item (noise, corruption, level, answer, both chains).

    Args:
        rng: the item's generator (continues the family's draws).
        split: "train", "test" or "ood".
        clip: `[S]` float32 clean clip.
        facts: ground-truth facts about `clip`; keys follow the unit-suffix convention above.
        question: the question text.
        choices: options for a choice item, None for a numeric one.
        answer: rule from final facts to the answer string.
        explain: grounded reasoning from final facts (without the closing "The answer is" sentence).
        topic: what the question asks, for the text-substitute chain ("which of two tones is higher").
        guesses: the options a text-substitute chain picks from for a numeric item.
        shift: (fact key, training range) of the parameter whose range differs between train and test; an
            ood speed change then always moves it further from training (`away_speeds`).
        crest_db: a range to draw the clip's crest factor from (reached with `signals.raise_crest`), for
            families whose waveform shape is the answer: peak over RMS then says nothing about it.
    Returns:
        The finished `SynthItem` with one clip.
    """
    clean = clip
    clip, background = _background(rng, clip)
    corruption = None
    if split == "ood":
        clip, corruption = _corrupt(rng, clip, clean, away_speeds(facts, shift))
        if corruption["kind"] == "speed":
            facts = scale_facts(facts, corruption["factor"])
    if crest_db is not None:
        clip = sig.raise_crest(clip, float(rng.uniform(*crest_db)), rng)
    peak = float(rng.uniform(*PEAK_RANGE))
    clip = sig.peak_normalize(clip, peak)
    facts = round_floats(facts)
    truth = answer(facts)
    substitute, guess = substitute_chain(rng, topic, list(choices or guesses))
    meta = {**facts, "split": split, "background": background, "corruption": corruption,
            "peak": round(peak, 3), "substitute_answer": guess}
    chains = {"grounded": f"{explain(facts)} The answer is {truth}.", "text_substitute": substitute}
    return SynthItem(question=question, answer=truth, choices=list(choices) if choices else None,
                     audio=[clip], meta=meta, reasonings=chains, default_style="grounded")


def two_sounds(rng: np.random.Generator, first: np.ndarray, second: np.ndarray, gap_s: float):
    """Two sounds in a row with short random lead and tail silences: (clip, onsets_s)."""
    lead = float(rng.uniform(0.05, 0.25))
    onsets = [lead, lead + first.size / sig.SAMPLE_RATE + gap_s]
    total = onsets[1] + second.size / sig.SAMPLE_RATE + float(rng.uniform(0.05, 0.25))
    return sig.place([(onsets[0], first), (onsets[1], second)], total), onsets


def first_or_second(values: list[float]) -> str:
    """'the first' or 'the second', whichever has the larger value."""
    return FIRST_SECOND[int(values[1] > values[0])]


# ---- families -----------------------------------------------------------------------------------------

PITCH_HZ = {"train": (150.0, 500.0), "test": (600.0, 1600.0)}
PITCH_QUESTIONS = (
    "Which of the two tones is higher?",
    "Which tone has the higher pitch, the first or the second?",
    "Listen to the two tones. Which one is higher in pitch?",
)


def make_pitch_compare(rng: np.random.Generator, split: str) -> SynthItem:
    lo, hi = split_range(PITCH_HZ, split)
    interval = rng.uniform(1.0, 12.0)
    low = log_uniform(rng, lo, hi / 2.0 ** (interval / 12.0))
    f0 = [low, semitones_up(low, interval)]
    if rng.random() < 0.5:
        f0.reverse()
    durations = rng.uniform(0.3, 0.7, 2)
    timbre = pick(rng, TONE_TIMBRES)
    levels = rng.uniform(-4.0, 4.0, 2)  # level is a distractor, independent of pitch
    tones = [sig.note(f, d, timbre, rng, g) for f, d, g in zip(f0, durations, levels)]
    clip, onsets = two_sounds(rng, tones[0], tones[1], float(rng.uniform(0.2, 0.4)))
    facts = {"f0_hz": f0, "durations_s": durations, "onsets_s": onsets, "timbre": timbre, "levels_db": levels}

    def explain(f):
        first, second = f["f0_hz"]
        return (f"The first tone sits near {hz(first)} and the second near {hz(second)}, "
                f"so {first_or_second(f['f0_hz'])} is higher.")

    return finish(rng, split, clip, facts, question=pick(rng, PITCH_QUESTIONS), choices=FIRST_SECOND,
                  answer=lambda f: first_or_second(f["f0_hz"]), explain=explain,
                  topic="which of two tones is higher", shift=("f0_hz", PITCH_HZ["train"]))


BEEP_HZ = {"train": (500.0, 1200.0), "test": (1400.0, 3000.0)}
BEEP_COUNTS = (1, 6)
BEEP_QUESTIONS = ("How many beeps are there?", "Count the beeps. How many do you hear?",
                  "How many times does the tone beep?")
EDGE_LOSS_S = 2 * 0.01 * 2 / 3  # energy a note's two 10 ms linear fades take away, in seconds of full level


def budget_durations(levels_db, weights, energy_s: float) -> np.ndarray:
    """Note lengths that give a row of notes a fixed energy, whatever their number and levels.

    Note i lasts in proportion to `weights[i]`, and the lengths are scaled so that the row's energy equals
    `energy_s` seconds at the loudest note's level (fades included). With the clip length drawn on its own,
    the clip's RMS over its peak (its crest factor) is then the same for one note or six. The price: notes
    get shorter as their number grows (beep length predicts beep_count about half the time, chance 1/6).
    That is a cue heard in the sound, not a property of the file, but a model can still lean on it.

    Args:
        levels_db: `[N]` note levels in dB.
        weights: `[N]` positive relative lengths.
        energy_s: the energy, in seconds of the loudest note.
    Returns:
        `[N]` lengths in seconds.
    """
    power = 10.0 ** ((np.asarray(levels_db, dtype=np.float64) - np.max(levels_db)) / 10.0)
    weights = np.asarray(weights, dtype=np.float64)
    return weights * energy_s / np.sum(weights * power) + EDGE_LOSS_S


def beep_train(rng: np.random.Generator, freq_hz: float, levels_db, durations, gaps, total_s: float):
    """Sine beeps in a row, at a random point of a `total_s` clip: (clip, onsets_s, durations_s).

    Args:
        levels_db, durations: `[N]` per beep; gaps: `[N - 1]` silences between them.
        total_s: the clip length; must leave at least 0.05 s before the first beep and after the last.
    """
    starts = np.concatenate([[0.0], np.cumsum(np.add(durations[:-1], gaps))])
    busy = float(starts[-1] + durations[-1])
    if busy + 0.1 > total_s:
        raise ValueError(f"{len(durations)} beeps need {busy + 0.1:.2f} s, more than the {total_s:.2f} s clip")
    onsets = float(rng.uniform(0.05, total_s - busy - 0.05)) + starts
    beeps = [(t, sig.note(freq_hz, d, "sine", rng, g)) for t, d, g in zip(onsets, durations, levels_db)]
    return sig.place(beeps, total_s), [float(t) for t in onsets], [float(d) for d in durations]


def make_beep_count(rng: np.random.Generator, split: str) -> SynthItem:
    count = int(rng.integers(BEEP_COUNTS[0], BEEP_COUNTS[1] + 1))
    freq = log_uniform(rng, *split_range(BEEP_HZ, split))
    levels = rng.uniform(-3.0, 3.0, count)
    # Neither the clip length nor the energy follows the count: a fixed energy budget shared by the beeps.
    durations = budget_durations(levels, rng.uniform(0.7, 1.3, count), float(rng.uniform(0.25, 0.45)))
    clip, onsets, durations = beep_train(rng, freq, levels, durations, rng.uniform(0.08, 0.22, count - 1),
                                         float(rng.uniform(2.6, 3.4)))
    facts = {"count": count, "beep_hz": freq, "onsets_s": onsets, "durations_s": durations, "levels_db": levels}

    def explain(f):
        times = join([f"{t:.2f} s" for t in f["onsets_s"]])
        if f["count"] == 1:
            return f"I hear a single {hz(f['beep_hz'])} beep, starting at {times}, and nothing else: 1 onset in all."
        return f"I hear {hz(f['beep_hz'])} beeps starting at {times}: {f['count']} separate onsets in all."

    guesses = [str(c) for c in range(BEEP_COUNTS[0], BEEP_COUNTS[1] + 1)]
    return finish(rng, split, clip, facts, question=pick(rng, BEEP_QUESTIONS), choices=None,
                  answer=lambda f: str(f["count"]), explain=explain, topic="how many beeps there are",
                  guesses=guesses, shift=("beep_hz", BEEP_HZ["train"]))


CHORD_ROOT_HZ = {"train": (110.0, 220.0), "test": (340.0, 680.0)}  # every note of a train chord < 330 Hz
CHORD_THIRDS = {"major": 4, "minor": 3}
CHORD_QUESTIONS = ("Is this chord major or minor?", "Does the chord sound major or minor?",
                   "Listen to the chord. Is its quality major or minor?")


def chord_notes(rng: np.random.Generator, split: str, quality: str) -> list[float]:
    """Root-position triad frequencies (root, third, fifth) with the root in the split's range."""
    root = log_uniform(rng, *split_range(CHORD_ROOT_HZ, split))
    return [root, semitones_up(root, CHORD_THIRDS[quality]), semitones_up(root, 7)]


def explain_chord(f: dict) -> str:
    root, third, fifth = f["notes_hz"]
    steps = round(12 * np.log2(third / root))
    name = {3: "a minor third", 4: "a major third"}.get(steps, f"{steps} semitones")
    return (f"The lowest note is near {hz(root)}, with notes near {hz(third)} and {hz(fifth)} above it: "
            f"{name} and a perfect fifth over the root, which makes the chord {f['quality']}.")


def make_chord_quality(rng: np.random.Generator, split: str) -> SynthItem:
    quality = pick(rng, ("major", "minor"))
    notes = chord_notes(rng, split, quality)
    duration = float(rng.uniform(0.8, 1.5))
    lead = float(rng.uniform(0.05, 0.25))
    clip = sig.place([(lead, sig.chord(notes, duration, rng))], lead + duration + float(rng.uniform(0.05, 0.25)))
    facts = {"quality": quality, "notes_hz": notes, "onset_s": lead, "duration_s": duration}
    return finish(rng, split, clip, facts, question=pick(rng, CHORD_QUESTIONS), choices=["major", "minor"],
                  answer=lambda f: f["quality"], explain=explain_chord, topic="whether a chord is major or minor",
                  shift=("notes_hz", CHORD_ROOT_HZ["train"]))


MELODY_HZ = {"train": (150.0, 600.0), "test": (700.0, 2000.0)}
CONTOUR_QUESTIONS = ("Is the melody ascending or descending?",
                     "Does the melody go up or down? Answer ascending or descending.",
                     "Listen to the notes. Is the melody ascending or descending?")


def melody(rng: np.random.Generator, split: str, offsets: np.ndarray, durations, gaps, timbre: str,
           total_s: float | None = None):
    """Notes at semitone `offsets` from the first, fitted inside the split's range: (clip, notes_hz, onsets_s).

    The melody starts after a 0.05-0.25 s lead and is followed by a 0.05-0.25 s tail, or, with `total_s`,
    sits at a random point of a clip that long (at least 0.05 s from either end).
    """
    lo, hi = split_range(MELODY_HZ, split)
    lowest = log_uniform(rng, lo, hi / 2.0 ** ((offsets.max() - offsets.min()) / 12.0))
    notes = [semitones_up(lowest, o - offsets.min()) for o in offsets]
    starts = np.concatenate([[0.0], np.cumsum(np.add(durations, gaps))[:-1]])
    busy = float(starts[-1] + durations[-1])
    if total_s is not None and busy + 0.1 > total_s:
        raise ValueError(f"a {busy:.2f} s melody does not fit a {total_s:.2f} s clip")
    onsets = starts + float(rng.uniform(0.05, 0.25 if total_s is None else total_s - busy - 0.05))
    waves = [(t, sig.note(f, d, timbre, rng)) for t, f, d in zip(onsets, notes, durations)]
    clip = sig.place(waves, onsets[-1] + durations[-1] + float(rng.uniform(0.05, 0.25)) if total_s is None else total_s)
    return clip, notes, [float(t) for t in onsets]


def make_melody_contour(rng: np.random.Generator, split: str) -> SynthItem:
    direction = pick(rng, ("ascending", "descending"))
    count = int(rng.integers(3, 7))
    steps = rng.integers(1, 4, count - 1) * (1 if direction == "ascending" else -1)
    offsets = np.concatenate([[0], np.cumsum(steps)])
    durations = rng.uniform(0.15, 0.35, count)
    gaps = rng.uniform(0.03, 0.08, count)
    clip, notes, onsets = melody(rng, split, offsets, durations, gaps, pick(rng, TONE_TIMBRES))
    facts = {"direction": direction, "notes_hz": notes, "onsets_s": onsets, "durations_s": durations}

    def explain(f):
        path = join([hz(x) for x in f["notes_hz"]]) + " in turn"
        way = "higher" if f["direction"] == "ascending" else "lower"
        return f"The notes go {path}; each one is {way} than the one before, so the melody is {f['direction']}."

    return finish(rng, split, clip, facts, question=pick(rng, CONTOUR_QUESTIONS), choices=["ascending", "descending"],
                  answer=lambda f: f["direction"], explain=explain, topic="whether a melody goes up or down",
                  shift=("notes_hz", MELODY_HZ["train"]))


TEMPO_BPM = {"train": (120.0, 200.0), "test": (210.0, 330.0)}
PATTERN_S, PATTERN_GAP_S, CLICK_S = 1.25, 0.9, 0.04
TEMPO_QUESTIONS = ("Which rhythm is faster, the first or the second?",
                   "Two click patterns play. Which one has the faster tempo?",
                   "Which of the two patterns is quicker?")


def clicks(rng: np.random.Generator, bpm: float, freq_hz: float) -> tuple[np.ndarray, list[float]]:
    """Clicks every 60/bpm seconds, filling one pattern of PATTERN_S: (wave, onsets_s)."""
    onsets = np.arange(0.0, PATTERN_S - CLICK_S, 60.0 / bpm)
    levels = rng.uniform(-3.0, 3.0, onsets.size)
    wave = sig.place([(t, sig.note(freq_hz, CLICK_S, "sine", rng, g)) for t, g in zip(onsets, levels)], PATTERN_S)
    return wave, [float(t) for t in onsets]


def make_tempo_compare(rng: np.random.Generator, split: str) -> SynthItem:
    lo, hi = split_range(TEMPO_BPM, split)
    ratio = rng.uniform(1.25, min(1.6, hi / lo))
    slow = rng.uniform(lo, hi / ratio)
    bpm = [slow, slow * ratio]
    if rng.random() < 0.5:
        bpm.reverse()
    freq = rng.uniform(1000.0, 2000.0)
    (a, onsets_a), (b, onsets_b) = clicks(rng, bpm[0], freq), clicks(rng, bpm[1], freq)
    clip, starts = two_sounds(rng, a, b, PATTERN_GAP_S)
    onsets = [[s + t for t in ts] for s, ts in zip(starts, (onsets_a, onsets_b))]
    facts = {"tempo_bpm": bpm, "click_hz": freq, "onsets_s": onsets, "pattern_s": [PATTERN_S, PATTERN_S]}

    def explain(f):
        bpm = f["tempo_bpm"]
        gaps = [60.0 / b for b in bpm]
        return (f"The first pattern clicks every {gaps[0]:.2f} s (about {bpm[0]:.0f} beats per minute) and the "
                f"second every {gaps[1]:.2f} s (about {bpm[1]:.0f}), so {first_or_second(bpm)} is faster.")

    return finish(rng, split, clip, facts, question=pick(rng, TEMPO_QUESTIONS), choices=FIRST_SECOND,
                  answer=lambda f: first_or_second(f["tempo_bpm"]), explain=explain,
                  topic="which of two rhythms is faster", shift=("tempo_bpm", TEMPO_BPM["train"]))


CARRIER_HZ = {"train": (150.0, 500.0), "test": (600.0, 1600.0)}
LOUDNESS_QUESTIONS = ("Is the sound getting louder or softer?", "Over the clip, does the sound grow louder or softer?",
                      "Does the tone get louder or softer as it plays?")


def ramped(wave: np.ndarray, change_db: float) -> tuple[np.ndarray, float, float]:
    """`wave` under a linear-in-dB ramp of `change_db`, loudest point at 0 dB: (wave, start_db, end_db)."""
    start, end = (-change_db, 0.0) if change_db > 0 else (0.0, change_db)
    return wave * sig.gain_ramp(wave.size, start, end), start, end


def make_loudness_trend(rng: np.random.Generator, split: str) -> SynthItem:
    trend = pick(rng, ("louder", "softer"))
    change = rng.uniform(8.0, 20.0) * (1 if trend == "louder" else -1)
    carrier = log_uniform(rng, *split_range(CARRIER_HZ, split))
    duration, timbre = rng.uniform(1.0, 2.5), pick(rng, TONE_TIMBRES)
    wave = sig.note(carrier, duration, timbre, rng)
    # A gentle tremolo (about +-1 dB) so the level is not a perfectly clean line.
    tremolo = rng.uniform(3.0, 7.0)
    wave = wave * (1.0 + 0.12 * np.sin(2 * np.pi * tremolo * np.arange(wave.size) / sig.SAMPLE_RATE)).astype(np.float32)
    wave, start, end = ramped(wave, change)
    lead = float(rng.uniform(0.05, 0.25))
    clip = sig.place([(lead, wave)], lead + duration + float(rng.uniform(0.05, 0.25)))
    facts = {"trend": trend, "start_db": start, "end_db": end, "change_db": end - start, "carrier_hz": carrier,
             "timbre": timbre, "tremolo_hz": tremolo, "onset_s": lead, "duration_s": duration}

    def explain(f):
        way = "rises" if f["change_db"] > 0 else "falls"
        return (f"The level {way} by about {abs(f['change_db']):.0f} dB over {f['duration_s']:.1f} s, "
                f"from {f['start_db']:.0f} dB to {f['end_db']:.0f} dB relative to its peak, "
                f"so it is getting {f['trend']}.")

    return finish(rng, split, clip, facts, question=pick(rng, LOUDNESS_QUESTIONS), choices=["louder", "softer"],
                  answer=lambda f: f["trend"], explain=explain, topic="whether a sound gets louder or softer",
                  shift=("carrier_hz", CARRIER_HZ["train"]))


DURATION_S = {"train": (0.2, 0.8), "test": (0.9, 1.5)}
DURATION_QUESTIONS = ("Which sound is longer, the first or the second?", "Which of the two tones lasts longer?",
                      "Two tones play. Which one is held longer?")


def make_duration_compare(rng: np.random.Generator, split: str) -> SynthItem:
    lo, hi = split_range(DURATION_S, split)
    ratio = rng.uniform(1.3, min(2.5, hi / lo))
    short = rng.uniform(lo, hi / ratio)
    durations = [short, short * ratio]
    if rng.random() < 0.5:
        durations.reverse()
    f0 = [log_uniform(rng, 200.0, 1000.0) for _ in range(2)]  # pitch is a distractor here
    timbre = pick(rng, TONE_TIMBRES)
    tones = [sig.note(f, d, timbre, rng, g) for f, d, g in zip(f0, durations, rng.uniform(-4.0, 4.0, 2))]
    clip, onsets = two_sounds(rng, tones[0], tones[1], float(rng.uniform(0.3, 0.5)))
    facts = {"durations_s": durations, "f0_hz": f0, "onsets_s": onsets, "timbre": timbre}

    def explain(f):
        first, second = f["durations_s"]
        return (f"The first tone lasts about {first:.2f} s and the second about {second:.2f} s, "
                f"so {first_or_second(f['durations_s'])} is longer.")

    return finish(rng, split, clip, facts, question=pick(rng, DURATION_QUESTIONS), choices=FIRST_SECOND,
                  answer=lambda f: first_or_second(f["durations_s"]), explain=explain,
                  topic="which of two sounds is longer", shift=("durations_s", DURATION_S["train"]))


TIMBRE_HZ = {"train": (150.0, 400.0), "test": (450.0, 1000.0)}
TIMBRE_CREST_DB = (7.5, 10.5)  # above every timbre clip's own crest factor (sine 3 dB plus its silences, ...)
TIMBRE_QUESTIONS = ("What kind of waveform is this sound: sine, square, sawtooth or noise?",
                    "Which best describes the timbre: sine, square, sawtooth or noise?",
                    "Is this a sine, square or sawtooth tone, or noise?")
_TIMBRE_SPECTRA = {
    "sine": "a single spectral peak near {f0} and no overtones, a pure tone",
    "square": "a fundamental near {f0} with overtones only at odd multiples (3x, 5x, ...) fading as 1/k, "
              "the square-wave pattern",
    "sawtooth": "a fundamental near {f0} with overtones at every multiple (2x, 3x, 4x, ...) fading as 1/k, "
                "the sawtooth pattern",
    "noise": "no pitch and no harmonic peaks, with energy spread evenly from the lowest frequencies up to 8 kHz",
}


def make_timbre(rng: np.random.Generator, split: str) -> SynthItem:
    timbre = pick(rng, sig.TIMBRES)
    f0 = log_uniform(rng, *split_range(TIMBRE_HZ, split))
    duration, lead = rng.uniform(0.6, 1.2), float(rng.uniform(0.05, 0.25))
    # Square and sawtooth with random harmonic phases, then a crest factor drawn for the clip (`finish`):
    # the spectrum says what the waveform is, peak over RMS does not.
    if timbre in ("square", "sawtooth"):
        wave = sig.harmonic_tone(f0, duration, timbre, rng)
        wave = wave * sig.envelope(wave.size)
    else:
        wave = sig.note(f0, duration, timbre, rng)
    clip = sig.place([(lead, wave)], lead + duration + float(rng.uniform(0.05, 0.25)))
    facts = {"timbre": timbre, "f0_hz": None if timbre == "noise" else f0, "onset_s": lead, "duration_s": duration}

    def explain(f):
        shape = _TIMBRE_SPECTRA[f["timbre"]].format(f0=hz(f["f0_hz"]) if f["f0_hz"] else "")
        return f"The sound shows {shape}, so it is {f['timbre']}."

    return finish(rng, split, clip, facts, question=pick(rng, TIMBRE_QUESTIONS), choices=list(sig.TIMBRES),
                  answer=lambda f: f["timbre"], explain=explain, topic="what kind of waveform a sound is",
                  shift=("f0_hz", TIMBRE_HZ["train"]), crest_db=TIMBRE_CREST_DB)


EVENT_HZ = {"train": (600.0, 1500.0), "test": (1800.0, 4000.0)}
POSITIONS = {"near the beginning": (0.06, 0.26), "in the middle": (0.42, 0.58), "near the end": (0.74, 0.94)}
EVENT_QUESTIONS = ("When does the short beep happen: near the beginning, in the middle or near the end?",
                   "Where in the clip is the short sound?", "At what point in the clip does the brief beep occur?")


def make_event_position(rng: np.random.Generator, split: str) -> SynthItem:
    position = pick(rng, list(POSITIONS))
    clip_s, event_s = rng.uniform(2.0, 3.0), rng.uniform(0.08, 0.2)
    centre = rng.uniform(*POSITIONS[position])
    onset = centre * clip_s - event_s / 2
    freq, drone = log_uniform(rng, *split_range(EVENT_HZ, split)), rng.uniform(80.0, 160.0)
    # A quiet low drone under the whole clip: the event must be found against a sound, not silence.
    bed = sig.note(drone, clip_s, "sine", rng, -12.0)
    clip = sig.place([(0.0, bed), (onset, sig.note(freq, event_s, "sine", rng))], clip_s)
    facts = {"position": position, "event_onset_s": onset, "event_duration_s": event_s,
             "event_centre_s": onset + event_s / 2, "clip_s": clip_s, "event_fraction": centre, "event_hz": freq,
             "drone_hz": drone}

    def explain(f):  # every time quoted is the centre's, like the percentage
        return (f"Over a low drone, a short {hz(f['event_hz'])} beep is centred at {f['event_centre_s']:.2f} s of a "
                f"{f['clip_s']:.2f} s clip, about {100 * f['event_fraction']:.0f}% of the way through, "
                f"so it happens {f['position']}.")

    return finish(rng, split, clip, facts, question=pick(rng, EVENT_QUESTIONS), choices=list(POSITIONS),
                  answer=lambda f: f["position"], explain=explain, topic="where in a clip a short sound happens",
                  shift=("event_hz", EVENT_HZ["train"]))


FAMILIES: list[Family] = [
    Family("pitch_compare", "acoustic", "choice", make_pitch_compare,
           "two tones; which is higher (train 150-500 Hz, test 600-1600 Hz)"),
    Family("beep_count", "acoustic", "numeric", make_beep_count,
           "1-6 beeps at varying levels; how many (train 500-1200 Hz, test 1400-3000 Hz)"),
    Family("chord_quality", "acoustic", "choice", make_chord_quality,
           "a root-position triad; major or minor (root: train 110-220 Hz, test 340-680 Hz)"),
    Family("melody_contour", "acoustic", "choice", make_melody_contour,
           "3-6 notes moving one way; ascending or descending (train 150-600 Hz, test 700-2000 Hz)"),
    Family("tempo_compare", "acoustic", "choice", make_tempo_compare,
           "two click patterns; which is faster (train 120-200 BPM, test 210-330 BPM)"),
    Family("loudness_trend", "acoustic", "choice", make_loudness_trend,
           "a tone under an 8-20 dB ramp; louder or softer (train 150-500 Hz, test 600-1600 Hz)"),
    Family("duration_compare", "acoustic", "choice", make_duration_compare,
           "two tones; which is longer (train 0.2-0.8 s, test 0.9-1.5 s)"),
    Family("timbre", "acoustic", "choice", make_timbre,
           "one sound; sine, square, sawtooth or noise (train 150-400 Hz, test 450-1000 Hz)"),
    Family("event_position", "acoustic", "choice", make_event_position,
           "a short beep over a drone; beginning, middle or end (train 600-1500 Hz, test 1800-4000 Hz)"),
]
