"""Speech task families, spoken by the offline espeak-ng synthesiser.

- `spoken_arithmetic` (Spoken-MQA-like): the problem is only in the audio ("What is seven plus five?");
  the text question is generic and the answer is a number.
- `voice_pitch`: one sentence spoken by a low or a high voice; "is the speaker's voice high or low?".
  Both classes mix male and female voices, so voice type does not give the label away.
- `speech_rate`: one sentence spoken slowly or three spoken fast (so both talk for about as long), placed
  in a clip of random length; "is the speaker talking fast or slow?".

Each item has two reasoning chains: `grounded` cites what is heard (the words spoken, the voice's
fundamental frequency, the speaking rate) and `text_substitute` argues from wording and priors only,
landing on a guess drawn independently of the truth (right only by chance). The F0 values in `meta` are the
nominal F0 of each voice preset, measured once for espeak-ng 1.51 (median over sentences, autocorrelation
pitch); durations are the trimmed speech lengths. voice_pitch and speech_rate clips get a drawn crest factor
and a random peak (`present`), so neither the file's level nor its length tells the answer. The `ood` split
uses held-out voices and sentences (and longer arithmetic). espeak-ng output is deterministic for the same
arguments, so items are a pure function of the random generator. Choice lists have a fixed order and answers
are drawn uniformly, so neither wording nor position tells the answer; the text-substitute pick is kept in
`meta["substitute_answer"]`. This module only synthesises and describes; it measures nothing.
"""

from __future__ import annotations

import io
import operator
import shutil
import subprocess

import numpy as np
import soundfile as sf
import soxr

from mgrd.data.synth import signals as sig
from mgrd.data.synth.base import SAMPLE_RATE, Family, SynthItem

ESPEAK = "espeak-ng"
UNAVAILABLE_MESSAGE = "espeak-ng not found: the speech families need it; install it with `apt-get install espeak-ng`"
SILENCE_LEVEL = 1e-3  # |sample| below this at either end is trimmed away
PEAK_RANGE = (0.3, 0.95)  # clips are scaled to a random peak, as the acoustic ones
CREST_DB = (23.0, 26.0)  # crest factor drawn for voice_pitch and speech_rate clips (above nearly every voice's)
SWELL_S = (0.01, 0.03)  # speech is peaky already: only a short swell lifts its crest factor that far


class SpeechSynthUnavailable(RuntimeError):
    """espeak-ng is not installed; the speech families cannot draw items."""

    def __init__(self, message: str = UNAVAILABLE_MESSAGE):
        super().__init__(message)


# ---------------------------------------------------------------- synthesis


def speech_available() -> bool:
    """Whether the espeak-ng executable is on PATH."""
    return shutil.which(ESPEAK) is not None


def _espeak_wav(text: str, voice: str, pitch: int, speed_wpm: int) -> bytes:
    if not speech_available():
        raise SpeechSynthUnavailable()
    cmd = [ESPEAK, "--stdout", "-b", "1", "-v", voice, "-p", str(pitch), "-s", str(speed_wpm), "--stdin"]
    done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60)
    if done.returncode != 0 or len(done.stdout) <= 44:
        raise RuntimeError(f"espeak-ng failed ({done.returncode}) for voice {voice!r}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def synthesize(text: str, voice: str = "en-us", pitch: int = 50, speed_wpm: int = 175) -> np.ndarray:
    """Speak `text` with espeak-ng.

    Args:
        text: what to say (plain text).
        voice: an espeak-ng voice, optionally with a variant ("en-us+f3").
        pitch: espeak-ng pitch adjustment, 0-99.
        speed_wpm: espeak-ng speed in words per minute, 80-450.
    Returns:
        `[S]` float32 at 16 kHz, silence trimmed at both ends, peak <= 1.
    Raises:
        SpeechSynthUnavailable: espeak-ng is not installed.
    """
    wav, rate = sf.read(io.BytesIO(_espeak_wav(text, voice, int(pitch), int(speed_wpm))), dtype="float32")
    if wav.ndim > 1:
        wav = wav[:, 0]
    wav = soxr.resample(wav, rate, SAMPLE_RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(wav) > SILENCE_LEVEL)
    if loud.size:
        wav = wav[loud[0]: loud[-1] + 1]
    return np.clip(wav, -1.0, 1.0)


def present(rng: np.random.Generator, wav: np.ndarray) -> np.ndarray:
    """A clip with a drawn crest factor (`CREST_DB`, one short swell) and a random peak (`PEAK_RANGE`).

    espeak-ng voices differ in level and peakiness (a high voice is less peaky than a low one), so without
    this the RMS or the crest factor of the file would tell a high voice from a low one.
    """
    wav = sig.raise_crest(wav, float(rng.uniform(*CREST_DB)), rng, width_s=SWELL_S)
    return sig.peak_normalize(wav, float(rng.uniform(*PEAK_RANGE)))


# ---------------------------------------------------------------- words

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell_number(n: int) -> str:
    """English words for 0 <= n <= 999 ("one hundred and five", "forty-two")."""
    if not 0 <= n <= 999:
        raise ValueError(f"can only spell 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + spell_number(rest))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _split_pool(split: str, main, ood):
    return ood if split == "ood" else main


# ---------------------------------------------------------------- voices and sentences

# (voice, espeak pitch, nominal F0 in Hz); 3 male-type and 3 female-type voices per class
LOW_VOICES = [("en-us+m2", 0, 66.0), ("en-us+m5", 20, 80.0), ("en-gb", 30, 86.0),
              ("en-us+f1", 0, 116.0), ("en-us+f4", 0, 116.0), ("en-us+f1", 5, 121.0)]
HIGH_VOICES = [("en-us+m2", 99, 178.0), ("en-us+m5", 99, 172.0), ("en-us+m6", 99, 172.0),
               ("en-us+f1", 75, 235.0), ("en-us+f4", 80, 250.0), ("en-us+Annie", 50, 244.0)]
OOD_LOW_VOICES = [("en-gb-scotland", 10, 76.0), ("en-029", 10, 76.0), ("en-us+m1", 10, 73.0),
                  ("en-029+f4", 0, 115.0), ("en-gb-scotland+f1", 0, 118.0), ("en-gb-scotland+f4", 0, 115.0)]
OOD_HIGH_VOICES = [("en-029+m3", 99, 174.0), ("en-gb+m3", 99, 170.0), ("en-us+m7", 99, 168.0),
                   ("en-gb-scotland+f2", 90, 296.0), ("en-029+f3", 70, 256.0), ("en-us+f5", 70, 254.0)]
# neutral voices for the arithmetic and rate families (pitch drawn from 35-65)
VOICES = ["en-us", "en-gb", "en-us+m3", "en-us+m5", "en-us+f1", "en-us+f3"]
OOD_VOICES = ["en-gb-scotland", "en-029", "en-us+f5", "en-029+f4"]

PITCH_SPLIT_HZ = 140.0  # between typical adult male (~120 Hz) and female (~210 Hz) speaking F0
SLOW_WPM = (80, 95)  # espeak speed settings per rate class
FAST_WPM = (290, 340)
RELAXED_WPM, BRISK_WPM = 150, 190  # conversational English runs at roughly 150-190 words per minute

# Sentences whose words-per-minute at a given espeak speed stays within 0.85-1.5x that speed for every
# voice above, so a slow item (<= 95 wpm setting) always measures below 150 wpm and a fast one
# (>= 290) above 240: the rate claims in the grounded chains hold for every sentence.
SENTENCES = [
    "The weather report says it will rain tomorrow afternoon.",
    "Please remember to close the window before you leave.",
    "We usually have dinner at seven on weekdays.",
    "She planted tomatoes and beans in the garden.",
    "The museum has a new exhibition about ancient ships.",
    "They walked along the river until sunset.",
    "The meeting has been moved to next Thursday.",
    "A small dog was sleeping under the kitchen table.",
    "The library opens early on Saturday mornings.",
    "Our teacher explained the lesson very carefully.",
    "The pharmacy closes early on public holidays.",
    "He repaired the bicycle before the competition.",
    "Everyone enjoyed the picnic beside the lake.",
    "Our family visited the aquarium during the holidays.",
    "The gardener watered the flowers every evening.",
    "A delivery van arrived at the warehouse this morning.",
    "The hospital opened a new department for children.",
    "I prefer vegetable soup on cold winter evenings.",
    "The photographer captured the sunrise over the valley.",
    "Our neighbour borrowed a ladder yesterday afternoon.",
    "The chocolate cake disappeared before the party ended.",
    "The students presented their project to the committee.",
    "The carpenter measured the window frame twice.",
    "Remember to bring your passport to the airport.",
    "The company announced a new office in the capital.",
]
OOD_SENTENCES = [
    "The lighthouse keeper wrote a letter every evening.",
    "A strong wind blew the leaves across the square.",
    "The baker forgot to switch off the oven last night.",
    "Two students argued about the rules of the game.",
    "Fresh snow covered the mountain road this morning.",
]


def _sentence(rng: np.random.Generator, split: str) -> str:
    return _pick(rng, _split_pool(split, SENTENCES, OOD_SENTENCES))


def _neutral_voice(rng: np.random.Generator, split: str) -> tuple[str, int]:
    return _pick(rng, _split_pool(split, VOICES, OOD_VOICES)), int(rng.integers(35, 66))


# ---------------------------------------------------------------- spoken arithmetic

ARITHMETIC_QUESTION = "Solve the math problem in the audio."
_OP_WORDS = {"+": ["plus"], "-": ["minus"], "*": ["times", "multiplied by"], "/": ["divided by"]}
_OP_SIGNS = {"+": "+", "-": "-", "*": "×", "/": "÷"}
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}
_ASK = ["What is {}?", "How much is {}?", "Calculate {}.", "Please work out {}."]


def _operands(rng: np.random.Generator, op: str, hi: int) -> tuple[int, int]:
    """Two operands for `op` with a whole, non-negative result."""
    if op == "+":
        return int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
    if op == "-":
        a = int(rng.integers(0, hi + 1))
        return a, int(rng.integers(0, a + 1))
    if op == "*":
        return int(rng.integers(0, 13)), int(rng.integers(0, 13))
    b, q = int(rng.integers(1, 11)), int(rng.integers(0, 11))
    return b * q, b


def _draw_problem(rng: np.random.Generator, split: str) -> tuple[list[int], list[str]]:
    """Operands and operators; ood chains three operands of 0-99 with + and - (left to right, result >= 0)."""
    if split != "ood":
        op = _pick(rng, ["+", "-", "*", "/"])
        return list(_operands(rng, op, 20)), [op]
    values = [int(rng.integers(10, 100))]
    ops = [_pick(rng, ["+", "-"]) for _ in range(2)]
    for op in ops:
        total = _evaluate(values, ops[: len(values) - 1])
        values.append(int(rng.integers(1, 100)) if op == "+" else int(rng.integers(0, min(total, 99) + 1)))
    return values, ops


def _evaluate(values: list[int], ops: list[str]) -> int:
    """Left-to-right evaluation (the only order the spoken problems use)."""
    total = values[0]
    for op, v in zip(ops, values[1:]):
        total = _APPLY[op](total, v)
    return total


def _steps(values: list[int], ops: list[str]) -> str:
    """'7 + 5 = 12.' or '12 + 30 = 42, then 42 - 8 = 34.'"""
    parts, total = [], values[0]
    for op, v in zip(ops, values[1:]):
        new = _evaluate([total, v], [op])
        parts.append(f"{total} {_OP_SIGNS[op]} {v} = {new}")
        total = new
    return ", then ".join(parts) + "."


def _make_spoken_arithmetic(rng: np.random.Generator, split: str) -> SynthItem:
    values, ops = _draw_problem(rng, split)
    words = [spell_number(values[0])]
    for op, v in zip(ops, values[1:]):
        words += [_pick(rng, _OP_WORDS[op]), spell_number(v)]
    transcript = _pick(rng, _ASK).format(" ".join(words))
    voice, pitch = _neutral_voice(rng, split)
    speed = int(rng.integers(140, 191))
    answer = _evaluate(values, ops)
    guess = int(rng.integers(0, 41))
    audio = synthesize(transcript, voice, pitch, speed)
    expression = " ".join([str(values[0])] + [f"{op} {v}" for op, v in zip(ops, values[1:])])
    shown = expression.replace("*", "×").replace("/", "÷")
    grounded = (f"The speaker says: \"{transcript}\" So the problem is {shown}. "
                f"{_steps(values, ops)} The answer is {answer}.")
    substitute = _pick(rng, [
        "The written prompt only asks me to solve the math problem in the audio and gives no numbers. "
        "Spoken arithmetic questions usually combine small whole numbers, so a typical result is about {g}. "
        "The answer is {g}.",
        "The text does not state the numbers. Problems like this tend to have modest answers, "
        "so I will go with {g}. The answer is {g}.",
    ]).format(g=guess)
    meta = {"transcript": transcript, "operands": values, "operators": ops, "expression": expression,
            "voice": voice, "espeak_pitch": pitch, "espeak_speed_wpm": speed,
            "duration_s": round(len(audio) / SAMPLE_RATE, 3), "split": split, "substitute_answer": str(guess)}
    return SynthItem(question=ARITHMETIC_QUESTION, answer=str(answer), choices=None, audio=[audio],
                     meta=meta, reasonings={"grounded": grounded, "text_substitute": substitute})


# ---------------------------------------------------------------- voice pitch

PITCH_CHOICES = ("high", "low")  # fixed order: the answer is drawn uniformly, so position tells nothing
PITCH_QUESTIONS = ["Is the speaker's voice high or low?", "Does the speaker have a high or a low voice?",
                   "Listen to the voice. Is its pitch high or low?"]


def _make_voice_pitch(rng: np.random.Generator, split: str) -> SynthItem:
    label = _pick(rng, PITCH_CHOICES)
    choices = PITCH_CHOICES
    pools = {"high": _split_pool(split, HIGH_VOICES, OOD_HIGH_VOICES),
             "low": _split_pool(split, LOW_VOICES, OOD_LOW_VOICES)}
    voice, pitch, f0 = _pick(rng, pools[label])
    sentence = _sentence(rng, split)
    speed = int(rng.integers(150, 191))
    question = _pick(rng, PITCH_QUESTIONS)
    guess = _pick(rng, PITCH_CHOICES)
    audio = present(rng, synthesize(sentence, voice, pitch, speed))
    side = "above" if label == "high" else "below"
    grounded = (f"The speaker says \"{sentence}\" The voice's fundamental frequency sits near {f0:.0f} Hz, "
                f"{side} the roughly {PITCH_SPLIT_HZ:.0f} Hz middle of adult speaking voices "
                f"(about 120 Hz for a typical man, 210 Hz for a typical woman). So the voice is {label}. "
                f"The answer is {label}.")
    substitute = _pick(rng, [
        "The words \"{s}\" are an ordinary everyday remark. Remarks like this are often said in a {g} voice, "
        "so I would say the voice is {g}. The answer is {g}.",
        "The sentence \"{s}\" sounds like something {who} would say, and such speakers usually have a {g} voice. "
        "The answer is {g}.",
    ]).format(s=sentence, g=guess, who="a child" if guess == "high" else "a grown man")
    meta = {"transcript": sentence, "voice": voice, "espeak_pitch": pitch, "espeak_speed_wpm": speed,
            "f0_hz": f0, "pitch_class": label, "duration_s": round(len(audio) / SAMPLE_RATE, 3),
            "split": split, "substitute_answer": guess}
    return SynthItem(question=question, answer=label, choices=list(choices), audio=[audio], meta=meta,
                     reasonings={"grounded": grounded, "text_substitute": substitute})


# ---------------------------------------------------------------- speech rate

RATE_CHOICES = ("fast", "slow")
RATE_QUESTIONS = ["Is the speaker talking fast or slow?", "Does the speaker speak fast or slow?",
                  "Listen to the speaking rate. Is it fast or slow?"]


FAST_SENTENCES = 3  # a fast item says three sentences, a slow one one: both talk for about 4-5 s
RATE_CLIP_S = (6.4, 7.2)  # clip length, drawn whatever the rate (the slowest speech lasts at most 6.2 s)


def _make_speech_rate(rng: np.random.Generator, split: str) -> SynthItem:
    label = _pick(rng, RATE_CHOICES)
    choices = RATE_CHOICES
    low, high = FAST_WPM if label == "fast" else SLOW_WPM
    speed = int(rng.integers(low, high + 1))
    pool = _split_pool(split, SENTENCES, OOD_SENTENCES)
    picks = rng.choice(len(pool), FAST_SENTENCES if label == "fast" else 1, replace=False)
    text = " ".join(pool[int(i)] for i in picks)
    voice, pitch = _neutral_voice(rng, split)
    question = _pick(rng, RATE_QUESTIONS)
    guess = _pick(rng, RATE_CHOICES)
    speech = synthesize(text, voice, pitch, speed)
    # The speech sits at a random point of a clip whose length is drawn on its own, and the clip's level
    # and crest factor are drawn too: only the words per second say fast or slow, not the file's length.
    clip_s = float(rng.uniform(*RATE_CLIP_S))
    onset = float(rng.uniform(0.05, clip_s - len(speech) / SAMPLE_RATE - 0.05))
    audio = present(rng, sig.place([(onset, speech)], clip_s))
    n_words = len(text.split())
    duration = len(speech) / SAMPLE_RATE
    wpm = 60.0 * n_words / duration
    if label == "fast":
        compare = f"well above the {BRISK_WPM} words per minute of brisk conversation, so the speaker talks quickly"
    else:
        compare = f"well below the {RELAXED_WPM} words per minute of relaxed conversation, so the speaker talks slowly"
    grounded = (f"The speaker says \"{text}\", {n_words} words in {duration:.1f} s, about {wpm:.0f} words "
                f"per minute. That is {compare}. The answer is {label}.")
    substitute = _pick(rng, [
        "The words \"{s}\" are everyday remarks, and remarks like these are usually said {m}. The answer is {g}.",
        "The words \"{s}\" read like {what}, which people tend to say {m}. The answer is {g}.",
    ]).format(s=text, g=guess, m="quickly" if guess == "fast" else "slowly",
              what="a hurried reminder" if guess == "fast" else "a careful explanation")
    meta = {"transcript": text, "voice": voice, "espeak_pitch": pitch, "espeak_speed_wpm": speed,
            "n_words": n_words, "onset_s": round(onset, 3), "duration_s": round(duration, 3),
            "clip_s": round(len(audio) / SAMPLE_RATE, 3), "words_per_minute": round(wpm, 1),
            "rate_class": label, "split": split, "substitute_answer": guess}
    return SynthItem(question=question, answer=label, choices=list(choices), audio=[audio], meta=meta,
                     reasonings={"grounded": grounded, "text_substitute": substitute})


FAMILIES: list[Family] = [
    Family("spoken_arithmetic", "speech", "numeric", _make_spoken_arithmetic,
           "Spoken arithmetic (Spoken-MQA-like): the problem is only in the audio; numeric answer."),
    Family("voice_pitch", "speech", "choice", _make_voice_pitch,
           "Is the speaker's voice high or low? Male and female voices in both classes."),
    Family("speech_rate", "speech", "choice", _make_speech_rate,
           "Is the speaker talking fast or slow? One sentence slowly or three fast, in clips of one length."),
]
