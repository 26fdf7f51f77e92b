"""The acoustic-feature lexicon: how much a reasoning chain talks about the sound rather than the wording.

The MGRD grounding criterion (Step-Audio-R1 §4.2) keeps chains that "reference acoustic features
explicitly" (timbre, temporal patterns, pitch contour, rhythm and other low-level properties) and drops
chains that reason from a textual description of the audio. The report does not say how this is decided;
this module is our documented, rule-based reading of it, and `mgrd.loop.filters` combines it with the
claim verifier (`mgrd.grounding.claims`).

The lexicon (`LEXICON`) lists terms in seven categories: pitch, rhythm (temporal pattern and tempo),
timbre, loudness, duration, spectral and prosodic cues. Each entry is a canonical term with the regular
expression of its surface forms ("louder", "softer", "quiet" -> "loud/soft"): the two ends of one scale are
one term, so a chain that only answers the question's own "higher or lower" names no new feature.

The score (`lexicon_score`) counts two kinds of evidence in a chain, with the speaker's quoted words and
reference clauses ("about 120 Hz for a typical man") left out:
- measurements: acoustic quantities as `claims.extract_claims` finds them ("199 Hz", "0.35 s", "-7 dB"),
  `QUANTITY_WEIGHT` each, and counts ("three beeps"), `TERM_WEIGHT` each (a question often implies its
  count: "the first or the second" has two sounds);
- feature terms: distinct lexicon terms, `TERM_WEIGHT` each.
Both count only when they do not already appear in the question or its choices: a chain that echoes "which
tone is higher" has perceived nothing. The score is the weighted sum capped at 1: two measurements, or
one measurement and two new feature terms, or four new feature terms reach `PASS_SCORE`. The acoustic
token ratio (lexicon and quantity tokens over all words) is reported beside it as a grounding metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mgrd.grounding.claims import blank_quotes, extract_claims

QUANTITY_WEIGHT = 0.5
TERM_WEIGHT = 0.25
PASS_SCORE = 0.5  # the grounding filter's default threshold (`mgrd.loop.filters.FilterConfig.min_lexicon`)

# category -> {canonical term: regex of its surface forms (whole words, case-insensitive)}
LEXICON: dict[str, dict[str, str]] = {
    "pitch": {
        "pitch": r"pitch(?:ed|es)?", "frequency": r"frequenc(?:y|ies)", "fundamental": r"fundamentals?|f0",
        "high/low": r"high(?:er|est)?|low(?:er|est)?", "semitone": r"semitones?", "octave": r"octaves?",
        "interval": r"intervals?", "note": r"notes?", "melody": r"melod(?:y|ies|ic)", "contour": r"contours?",
        "ascending/descending": r"ascend(?:s|ing)?|descend(?:s|ing)?", "chord": r"chords?",
        "major/minor": r"major|minor", "third": r"thirds?", "fifth": r"fifths?", "root": r"root",
        "tone": r"tones?", "sharp": r"sharp", "flat": r"flat",
    },
    "rhythm": {
        "rhythm": r"rhythm(?:s|ic)?", "tempo": r"tempos?", "beat": r"beats?", "click": r"clicks?",
        "pulse": r"puls(?:e|es|ing)", "onset": r"onsets?",
        "fast/slow": r"fast(?:er|est)?|slow(?:er|est|ly)?|quick(?:er|ly)?|rapid(?:ly)?", "rate": r"rates?",
        "regular": r"regular(?:ly)?", "gap": r"gaps?",
        "pause": r"paus(?:e|es|ed)", "beep": r"beeps?", "repeat": r"repeat(?:s|ed|ing)?",
        "evenly spaced": r"evenly spaced", "per second": r"per second",
    },
    "timbre": {
        "timbre": r"timbres?", "waveform": r"waveforms?|wave shape", "sine": r"sine", "square": r"square",
        "sawtooth": r"sawtooth", "noise": r"nois(?:e|y)", "overtone": r"overtones?", "harmonic": r"harmonics?",
        "partial": r"partials", "bright": r"bright(?:er|ness)?", "dull": r"dull(?:er)?", "pure": r"pure",
        "buzzy": r"buzz(?:y|ing)?", "hollow": r"hollow", "raspy": r"raspy|rough(?:ness)?", "warm": r"warm(?:th)?",
    },
    "loudness": {
        "loud/soft": r"loud(?:er|est|ness|ly)?|soft(?:er|est|ly)?|quiet(?:er|est|ly)?",
        "volume": r"volumes?", "level": r"levels?", "decibel": r"decibels?", "amplitude": r"amplitudes?",
        "intensity": r"intensit(?:y|ies)", "crescendo": r"crescendo", "fade": r"fad(?:e|es|ed|ing)",
        "swell": r"swell(?:s|ing)?", "rises/falls": r"ris(?:es|ing)|fall(?:s|ing)",
    },
    "duration": {
        "duration": r"durations?", "long/short": r"long(?:er|est)?|short(?:er|est)?",
        "lasts": r"last(?:s|ed|ing)", "held": r"held|sustain(?:ed|s)?", "brief": r"brief(?:ly)?",
        "length": r"lengths?", "second": r"seconds|milliseconds",
    },
    "spectral": {
        "spectrum": r"spectr(?:um|a|al)", "peak": r"peaks?", "energy": r"energy", "band": r"bands?|bandwidth",
        "formant": r"formants?", "resonance": r"resonan(?:ce|t)", "hertz": r"hertz|kilohertz",
    },
    "prosodic": {
        "voice": r"voic(?:e|es|ed)", "intonation": r"intonations?", "prosody": r"prosod(?:y|ic)",
        "stress": r"stress(?:ed)?", "accent": r"accents?", "syllable": r"syllables?", "speaking rate":
        r"speaking rate|speech rate|words per minute", "emphasis": r"emphasi[sz](?:e|ed|is)", "monotone": r"monotone",
        "breathy": r"breathy", "speaker": r"speakers?",
    },
}
_TERMS = [(category, term) for category, terms in LEXICON.items() for term in terms]
# one pass over a text finds every term: group t<i> is term i of `_TERMS`
_ANY_TERM = re.compile(r"\b(?:" + "|".join(f"(?P<t{i}>{LEXICON[c][t]})" for i, (c, t) in enumerate(_TERMS))
                       + r")\b", re.IGNORECASE)
_NUMBER_KINDS = ("quantity", "bound", "count", "sequence")


@dataclass(frozen=True)
class LexiconScore:
    """How acoustic a chain is.

    Attributes:
        score: in [0, 1]; `QUANTITY_WEIGHT` per new measurement plus `TERM_WEIGHT` per new count or feature term.
        quantities: the new measurements' and counts' texts, in order.
        terms: the new feature terms (canonical), in order of first use.
        categories: the lexicon categories those terms come from.
        ratio: acoustic tokens (lexicon words and quantities, echoed or not) over all word tokens.
    """

    score: float
    quantities: tuple[str, ...]
    terms: tuple[str, ...]
    categories: tuple[str, ...]
    ratio: float

    def describe(self) -> str:
        cats = ", ".join(self.categories) or "no feature terms"
        return f"lexicon {self.score:.2f} ({len(self.quantities)} measurements; {cats})"


def lexicon_score(text: str, question: str = "") -> LexiconScore:
    """Score a chain's acoustic grounding (module docstring).

    Args:
        text: the reasoning.
        question: the question and its choices as shown to the model; evidence already in it does not count.
    Returns:
        The `LexiconScore`.
    """
    plain = blank_quotes(text)
    asked = " ".join(question.lower().split())
    quantities = []
    number_tokens = 0
    for claim in extract_claims(plain):
        if claim.kind not in _NUMBER_KINDS:
            continue
        if claim.kind != "sequence":
            number_tokens += len(claim.text.split())
        if claim.kind != "sequence" and " ".join(claim.text.lower().split()) not in asked:
            quantities.append((claim.text, claim.kind == "count"))
    quantities = list(dict.fromkeys(quantities))
    asked_terms = {m.lastgroup for m in _ANY_TERM.finditer(question)}
    terms, categories, term_tokens = [], [], 0
    for m in _ANY_TERM.finditer(plain):
        term_tokens += len(m.group(0).split())
        category, term = _TERMS[int(m.lastgroup[1:])]
        if m.lastgroup not in asked_terms and term not in terms:
            terms.append(term)
            categories.append(category)
    words = len(re.findall(r"[\w.+-]+", plain)) or 1
    evidence = sum(TERM_WEIGHT if is_count else QUANTITY_WEIGHT for _, is_count in quantities)
    evidence += TERM_WEIGHT * len(terms)
    return LexiconScore(score=min(1.0, evidence), quantities=tuple(q for q, _ in quantities), terms=tuple(terms),
                        categories=tuple(dict.fromkeys(categories)),
                        ratio=min(1.0, (term_tokens + number_tokens) / words))
