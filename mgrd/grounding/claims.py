"""Verifiable acoustic claims in reasoning text: extraction, and verification against facts about the audio.

A grounded chain says things about the sound that can be checked: "the first tone sits near 199 Hz",
"three beeps", "the level falls by about 10 dB over 1.7 s", "so the second is higher", "it is getting
louder". `extract_claims(text)` finds them; `verify_claims(claims, facts)` checks each against facts, the
item's `meta` (`facts_from_meta`) or, for data without meta, measurements of the audio
(`mgrd.grounding.measure.clip_facts`). A claim that contradicts the facts is what fails the MGRD grounding
filter (`mgrd.loop.filters`); `mgrd.grounding.coherence` uses the same claims to find steps that contradict
each other. This module scores nothing and decides no filter.

Claim kinds (`Claim.kind`):
- `quantity`: a number with an acoustic unit (Hz/kHz, s/ms, dB, BPM, words per minute, "per second", %).
  Bound to an element when an ordinal word precedes it in its clause ("the second near 220 Hz" -> element
  1; "beep 3 is at -6 dB" -> 2; "starts near" -> 0, "ends near" -> -1, unless a sound is named before:
  "the second starts at 0.9 s" -> 1), and given a role by the words just before it ("lasts" ->
  duration, "at"/"starting" -> a time, "every" -> a period, "of a 2.4 s clip" -> the clip length).
- `sequence`: two or more quantities of one unit listed in a row ("206 Hz, 245 Hz and 259 Hz"): checked
  as an ordered list when the facts hold a list of that length (a wrong value or order contradicts it). A
  run after "the others" / "the rest" / "the remaining" ("the others sit at +7 dB, -6 dB and +9 dB") lists
  every element after the first: it is checked against lists one longer, from their second element.
- `bound`: "more than four per second", "above the roughly 140 Hz middle": the fact must lie on that side.
- `count`: "three beeps", "a single beep", "7 words", "2 of them are louder than the first" (or "two beeps
  are louder than the first": a count of louder beeps, not of all beeps).
- `compare`: "the second is higher" (pitch), longer/shorter, faster/slower, louder/softer, between the
  first two of a list ("beep 2 is louder" too; not "the second is louder than the fourth").
- `trend`: "getting louder", "the level falls"; `contour`: "each one is higher than the one before",
  "the melody is descending", "ends higher than it starts".
- `category`: chord quality ("a minor third", "the chord is major"), waveform ("it is square"), event
  position ("happens in the middle").
- `quote`: words the speaker says ("The speaker says "..."") against the transcript.

Not claims: numbers without a unit, numbers in clauses that cite a reference rather than the sound ("about
120 Hz for a typical man"), anything in a hypothetical or rule clause ("a major chord should get louder"),
and text inside quotes (the speech's own words). Verification tolerances are in `TOLERANCES`. Against
measured facts they widen (`MEASURED_EXTRA`), ordinals do not bind (a measurement may split or join
events), a listed run can only confirm, and in a noisy clip (`MEASURED_MIN_SNR_DB`) so can times and
levels. A claim with no fact of its kind is "unverifiable", never false.

Levels need a sound to belong to. Per-sound levels (a `levels_db` list) sit a few dB apart, so a level
checked against all of them would match most numbers by chance ("-6 dB" among beeps at +-5-10 dB). A level
number is checked against one sound's level only when an ordinal binds it ("the third beep is -6 dB"),
when it is a member of a listed run that matches in order, or when the clip has a single sound (a list of
one). An unbound level in a clip of several sounds is "unverifiable": it neither supports nor refutes;
scalar level facts (`change_db`, `start_db`, `end_db`) still check it ("falls by about 10 dB"). Measured
facts bind no ordinals, so there only runs and single sounds check levels.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------------------------------- numbers

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_WORD_ALT = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
# a signed decimal, or a number word; the sign must not be a hyphen inside a word ("square-wave")
NUM = rf"(?:(?<![\w.])[-+\u2212]?\d+(?:\.\d+)?|\b(?:{_WORD_ALT})\b)"

# unit pattern -> (dimension, multiplier, role); longest alternatives first
_UNITS: list[tuple[str, str, float, str | None]] = [
    (r"beats?\s+per\s+minute|bpm\b", "bpm", 1.0, None),
    (r"words?\s+per\s+minute|wpm\b", "wpm", 1.0, None),
    (r"(?:(?:notes?|beats?|clicks?|beeps?|times|syllables?)\s+)?(?:per|a)\s+second\b|/\s?s\b", "hz", 1.0, "rate"),
    (r"kHz\b|kilohertz\b", "hz", 1000.0, None),
    (r"Hz\b|hertz\b", "hz", 1.0, None),
    (r"ms\b|milliseconds?\b", "s", 0.001, None),
    (r"s\b|secs?\b|seconds?\b", "s", 1.0, None),
    (r"dB\b|decibels?\b", "db", 1.0, None),
    (r"%|percent\b|per\s+cent\b", "percent", 1.0, None),
]
_UNIT_RE = re.compile("|".join(f"(?P<u{i}>{p})" for i, (p, *_) in enumerate(_UNITS)), re.IGNORECASE)
_QUANTITY = re.compile(rf"(?P<num>{NUM})\s*(?P<unit>{_UNIT_RE.pattern})", re.IGNORECASE)


def _number(text: str) -> float:
    text = text.strip().lower().replace("\u2212", "-")
    return float(_NUMBER_WORDS[text]) if text in _NUMBER_WORDS else float(text)


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


# ---------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """One checkable statement about the sound.

    Attributes:
        kind: "quantity", "sequence", "bound", "count", "compare", "trend", "contour", "category" or "quote".
        text: the words as written.
        start, end: its span in the text.
        dim: the dimension of a number ("hz", "s", "db", "bpm", "wpm", "percent", "count"), else None.
        value: a number (quantity, bound, count), a tuple of numbers (sequence), a direction or category
            word (compare: "higher"...; trend: "louder"/"softer"; contour: "up"/"down"; category: its word),
            or the quoted words (quote).
        index: the element an ordinal binds it to (0 first, 1 second, -1 last), None when unbound; for a
            sequence, the element its first member is (1 after "the others", else None: the whole list);
            for a compare claim, which of the first two is said to be higher/longer/...
        role: "duration", "time", "period", "clip", "rate" (numbers), the feature of a compare, trend or
            contour claim ("pitch", "duration", "tempo", "loudness"), the fact of a category claim
            ("quality", "timbre", "position"), or the counted noun of a count claim.
        decimals: decimals as written (a number's printed precision), 0 otherwise.
        relation: ">" or "<" for a bound claim (the fact lies above / below `value`), else None.
    """

    kind: str
    text: str
    start: int
    end: int
    dim: str | None = None
    value: Any = None
    index: int | None = None
    role: str | None = None
    decimals: int = 0
    relation: str | None = None


# words that make a clause a rule or a hypothesis, not a statement about this sound
_HYPOTHETICAL = re.compile(r"\b(?:should|would|could|if|whether|rule|suppose|expected|might|must)\b", re.IGNORECASE)
# words that make a clause cite a reference value, not a measurement of this sound
_REFERENCE = re.compile(r"\b(?:typical(?:ly)?|usual(?:ly)?|normal(?:ly)?|average|middle of|conversation|"
                        r"standard|for example|such as|e\.g\.)", re.IGNORECASE)
_BOUND_WORDS = re.compile(r"(?:\b(?P<rel>more than|greater than|higher than|above|over|fewer than|less than|"
                          r"lower than|below|under|up to)\s+(?:(?:the|a|about|roughly|around|some)\s+){0,3})$",
                          re.IGNORECASE)
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "fifth": 4,
             "sixth": 5, "last": -1, "final": -1, "starts": 0, "begins": 0, "ends": -1}
_VERB_ORDINALS = ("starts", "begins", "ends")  # "the melody starts near" -> 0; "the second starts at" stays 1
# "beep 2", "tone 1": a numbered sound (not "beep 2 s later": a number with a unit is a quantity)
_NUMBERED = (rf"\b(?:beep|tone|sound|note|click)\s+(?:number\s+|no\.\s*|#)?[1-9]\d?\b(?!\.\d)"
             rf"(?!\s*(?:{_UNIT_RE.pattern}))")
_ORDINAL_RE = re.compile(r"\b(?:" + "|".join(_ORDINALS) + r"|others|rest|remaining|each|both)\b|" + _NUMBERED,
                         re.IGNORECASE)
_AFTER_FIRST = ("others", "rest", "remaining")  # a run after these lists every element but the first
_ROLES = [(re.compile(r"\b(?:lasts?|lasting|long|held|duration|over|for)\s+(?:(?:about|around|roughly|"
                      r"some|nearly|almost|just)\s+)?$", re.I), "duration"),
          (re.compile(r"\bevery\s+(?:(?:about|around|roughly)\s+)?$", re.I), "period"),
          (re.compile(r"\b(?:at|starting at|starts at|begins at|onset at|centred at|centered at|from|to|"
                      r"until)\s+(?:(?:about|around|roughly)\s+)?$", re.I), "time")]
_CLIP_AFTER = re.compile(r"^\s*(?:long\s+)?(?:clip|recording|file|audio)\b", re.I)
_SEQ_SEP = re.compile(r"^\s*(?:,\s*(?:and\s+|then\s+)?|and\s+|then\s+)$", re.IGNORECASE)
_QUOTES = re.compile(r"\"[^\"]*\"|\u201c[^\u201d]*\u201d")
_SAYS = re.compile(r"\b(?:says?|said|saying|speaks|spoken|hear|heard|words are)\s*:?\s*$", re.IGNORECASE)


def _segments(text: str, seps: str) -> list[tuple[int, int]]:
    """[start, end) spans between separators; a '.' between digits does not split."""
    spans, start = [], 0
    for m in re.finditer(seps, text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


_SENTENCE_SEPS = r"(?<!\d)\.(?!\d)|[!?;\n]|\.(?=\s|$)"
_CLAUSE_SEPS = _SENTENCE_SEPS + r"|,|\(|\)|:"


def _span_of(spans: list[tuple[int, int]], pos: int) -> tuple[int, int]:
    """The span holding `pos` (spans are sorted and disjoint)."""
    i = bisect.bisect_right(spans, (pos, math.inf)) - 1
    return spans[i] if i >= 0 and spans[i][0] <= pos <= spans[i][1] else (0, 0)


ORDINAL_REACH = 160  # characters before a number searched for its ordinal (a clause, not a whole loop)
_UNIT_SECOND = re.compile(rf"(?:{NUM}|\bper|\ba)\s*$", re.IGNORECASE)


def _ordinal_word(text: str, seg_start: int, pos: int) -> str | None:
    """The last ordinal or plural word ("the others", "each") or numbered sound ("beep 2") before `pos` in
    its segment, lower-cased. "second" right after a number is a unit; "starts"/"ends" after a named sound
    ("the second starts at") say where in that sound, not which sound."""
    last = None
    for m in _ORDINAL_RE.finditer(text, max(seg_start, pos - ORDINAL_REACH), pos):
        word = m.group(0).lower()
        if word == "second" and _UNIT_SECOND.search(text[max(seg_start, m.start() - 20):m.start()]):
            continue  # "2 seconds", "per second": a unit, not an ordinal
        if word in _VERB_ORDINALS and _ordinal_index(last) is not None and last not in _VERB_ORDINALS:
            continue
        last = word
    return last


def _ordinal_index(word: str | None) -> int | None:
    """The element an ordinal word or numbered sound names ("second" -> 1, "beep 3" -> 2), else None."""
    number = re.search(r"\d+$", word or "")
    return int(number.group(0)) - 1 if number else _ORDINALS.get(word)


def _ordinal(text: str, seg_start: int, pos: int) -> int | None:
    """The element an ordinal word before `pos` in its segment binds to (the last one wins); None when
    there is none or a plural word ("the others", "each") resets it."""
    return _ordinal_index(_ordinal_word(text, seg_start, pos))


def _role(text: str, start: int, end: int, default: str | None, dim: str) -> str | None:
    if default:
        return default
    if dim != "s":  # "at 300 Hz", "at -3 dB": the word roles below are roles of times
        return None
    if _CLIP_AFTER.match(text[end:end + 20]):
        return "clip"
    before = text[max(0, start - 30):start]
    for pattern, role in _ROLES:
        if pattern.search(before):
            return role
    return None


def _unit_of(unit_text: str) -> tuple[str, float, str | None]:
    m = _UNIT_RE.fullmatch(unit_text.strip())
    index = int(next(k for k, v in m.groupdict().items() if v is not None)[1:])
    _, dim, mult, role = _UNITS[index]
    return dim, mult, role


def blank_quotes(text: str) -> str:
    """`text` with quoted spans replaced by spaces (offsets kept): the speaker's words are no claims."""
    return _QUOTES.sub(lambda m: " " * len(m.group(0)), text)


def _quantities(text: str, sentences, clauses) -> list[Claim]:
    found = []
    for m in _QUANTITY.finditer(text):
        dim, mult, role = _unit_of(m.group("unit"))
        num = m.group("num")
        before = text[_span_of(clauses, m.start())[0]:m.start()]
        bound = _BOUND_WORDS.search(before)
        rel = None
        if bound:
            rel = ">" if bound.group("rel").lower() in ("more than", "greater than", "higher than", "above",
                                                        "over") else "<"
            if bound.group("rel").lower() == "over" and dim == "s":  # "falls 10 dB over 1.7 s" is a span
                rel = None
        kind = "bound" if rel else "quantity"
        seg = _span_of(sentences, m.start())
        found.append(Claim(kind, m.group(0), m.start(), m.end(), dim, _number(num) * mult,
                           None if rel else _ordinal(text, seg[0], m.start()),
                           _role(text, m.start(), m.end(), role, dim), _decimals(num), rel))
    return found


def _sequences(quantities: list[Claim], text: str, sentences) -> list[Claim]:
    """Runs of two or more quantities of one dimension joined by commas/"and" ("0.31 s, 0.72 s and 1.10 s");
    `index` 1 for a run after "the others" (it starts at the second element), else None."""
    runs: list[list[Claim]] = []
    for q in quantities:
        if q.kind != "quantity":
            continue
        prev = runs[-1][-1] if runs else None
        if prev and prev.dim == q.dim and _SEQ_SEP.match(text[prev.end:q.start]):
            runs[-1].append(q)
        else:
            runs.append([q])
    return [Claim("sequence", text[r[0].start:r[-1].end], r[0].start, r[-1].end, r[0].dim,
                  tuple(c.value for c in r),
                  1 if _ordinal_word(text, _span_of(sentences, r[0].start)[0], r[0].start) in _AFTER_FIRST else None,
                  r[0].role, max(c.decimals for c in r))
            for r in runs if len(r) >= 2]


_COUNT_NOUNS = r"beeps?|onsets?|clicks?|notes?|tones?|words?|events?|sounds?|pulses?|taps?|syllables?|chords?"
_COUNT = re.compile(rf"(?P<num>{NUM})\s+(?:{NUM}\s*k?Hz\s+)?(?:(?:separate|distinct|different|short|brief|loud|"
                    rf"soft|quiet|"
                    rf"clear|audible|individual)\s+)?(?P<noun>{_COUNT_NOUNS})\b", re.IGNORECASE)
_SINGLE = re.compile(rf"\b(?:a single|one single|only one|just one|exactly one)\s+(?:[\w.-]+\s+){{0,3}}?"
                     rf"(?P<noun>{_COUNT_NOUNS})\b", re.IGNORECASE)
_LOUDER_COUNT = re.compile(rf"(?P<num>{NUM})\s+(?:of\s+(?:them|the\s+(?:other\s+)?beeps|the\s+others)|(?:other\s+)?"
                           rf"beeps?)\s+(?:is|are)\s+(?P<dir>louder|softer|quieter)\s+than\s+the\s+first\b",
                           re.IGNORECASE)


def _counts(text: str, taken: list[tuple[int, int]]) -> list[Claim]:
    found = []
    for m in _LOUDER_COUNT.finditer(text):
        found.append(Claim("count", m.group(0), m.start(), m.end(), "count", _number(m.group("num")),
                           role=f"{m.group('dir').lower()}_than_first"))
        taken.append((m.start(), m.end()))
    for pattern in (_COUNT, _SINGLE):
        for m in pattern.finditer(text):
            if any(a <= m.start() < b for a, b in taken):
                continue
            value = _number(m.group("num")) if "num" in pattern.groupindex else 1.0
            noun = m.group("noun").lower().removesuffix("s")
            found.append(Claim("count", m.group(0), m.start(), m.end(), "count", value, role=noun))
            taken.append((m.start(), m.end()))
    return found


_FEATURE = {"higher": ("pitch", 0), "lower": ("pitch", 1), "longer": ("duration", 0), "shorter": ("duration", 1),
            "faster": ("tempo", 0), "quicker": ("tempo", 0), "slower": ("tempo", 1), "louder": ("loudness", 0),
            "softer": ("loudness", 1), "quieter": ("loudness", 1)}
_COMPARE = re.compile(r"\b(?:(?:the\s+)?(?P<ord>first|second|1st|2nd)\s+(?:(?:tone|one|sound|note|pattern|beep|"
                      r"rhythm|clip|voice|chord|melody|click pattern)\s+)?|(?:beep|tone|sound|note)\s+(?P<num>[12])\s+)"
                      r"(?:is|was|sounds|seems|sits|plays)\s+"
                      r"(?:(?:clearly|slightly|much|a bit|a little|noticeably|the)\s+)?(?P<adj>higher|lower|longer|"
                      r"shorter|faster|quicker|slower|louder|softer|quieter)\b"
                      r"(?!\s+than\s+(?:the\s+)?(?:third|fourth|fifth|sixth|last|final|others|rest|"
                      r"(?:beep|tone|sound|note)\s+[3-9]))", re.IGNORECASE)
_TREND = re.compile(r"\b(?:(?:gets?|getting|grows?|growing|becomes?|becoming|goes|going|turns?|turning)\s+"
                    r"(?P<adj>louder|softer|quieter)|(?:level|volume|loudness|sound|intensity)\s+"
                    r"(?P<verb>rises|rose|falls|fell|drops|dropped|increases|increased|decreases|decreased|"
                    r"climbs|climbed|grows|declines))\b", re.IGNORECASE)
_CONTOUR = re.compile(r"\b(?:melody|notes?|pitch|tune)\s+(?:is|was|are|goes|go|moves|move|runs|steps)\s+"
                      r"(?P<word>ascending|descending|up|down|upward|downward|rising|falling)\b"
                      r"|\beach\s+(?:one|note|tone)\s+is\s+(?P<step>higher|lower)\s+than\s+the\s+(?:one|note)\s+"
                      r"before\b|\bends?\s+(?P<end>higher|lower)\s+than\s+it\s+(?:starts|started|begins|began)\b",
                      re.IGNORECASE)
_UP_WORDS = {"ascending", "up", "upward", "rising", "higher"}
_CATEGORIES = [
    (re.compile(r"\b(?P<v>major|minor)\s+(?:third|triad|chord)\b|\bchord\s+(?:is\s+|sounds\s+)?(?P<w>major|minor)\b",
                re.I), "quality"),
    (re.compile(r"\b(?P<v>sine|square|sawtooth)[- ]wave\b|(?<!answer )\b(?:it is|is an?|sounds like an?|it is an?)\s+"
                r"(?P<w>sine|square|sawtooth|noise)\b|\b(?P<x>pure tone)\b", re.I), "timbre"),
    (re.compile(r"(?<!answer )\b(?:happens|occurs|comes|sits|is|appears)\s+(?P<v>near the beginning|in the middle|"
                r"near the end)",
                re.I), "position"),
]


def _directions(text: str) -> list[Claim]:
    found = []
    for m in _COMPARE.finditer(text):
        feature, flip = _FEATURE[m.group("adj").lower()]
        which = 0 if (m.group("ord") or "").lower() in ("first", "1st") or m.group("num") == "1" else 1
        found.append(Claim("compare", m.group(0), m.start(), m.end(), value=m.group("adj").lower(),
                           index=which if not flip else 1 - which, role=feature))
    for m in _TREND.finditer(text):
        word = (m.group("adj") or m.group("verb")).lower()
        up = word in ("louder", "rises", "rose", "increases", "increased", "climbs", "climbed", "grows")
        found.append(Claim("trend", m.group(0), m.start(), m.end(), value="louder" if up else "softer",
                           role="loudness"))
    for m in _CONTOUR.finditer(text):
        word = (m.group("word") or m.group("step") or m.group("end")).lower()
        how = "monotone" if m.group("step") else ("ends" if m.group("end") else "overall")
        found.append(Claim("contour", m.group(0), m.start(), m.end(), value="up" if word in _UP_WORDS else "down",
                           role=how))
    for pattern, fact in _CATEGORIES:
        for m in pattern.finditer(text):
            word = next(v for v in m.groupdict().values() if v).lower()
            found.append(Claim("category", m.group(0), m.start(), m.end(),
                               value="sine" if word == "pure tone" else word, role=fact))
    return found


def _quote_claims(original: str) -> list[Claim]:
    found = []
    for m in _QUOTES.finditer(original):
        if _SAYS.search(original[max(0, m.start() - 25):m.start()]):
            found.append(Claim("quote", m.group(0), m.start(), m.end(), value=m.group(0)[1:-1]))
    return found


@functools.lru_cache(maxsize=1024)  # the filters read one chain's claims three times (lexicon, grounding, coherence)
def extract_claims(text: str) -> tuple[Claim, ...]:
    """Every checkable claim about the sound in `text`, in order of position.

    Quoted speech, reference clauses and hypothetical/rule clauses are skipped (module docstring); a
    quantity that is part of a listed sequence is reported both alone and within its `sequence` claim.

    Args:
        text: reasoning (and answer) text.
    Returns:
        Claims sorted by start offset (a tuple: results are cached).
    """
    plain = blank_quotes(text)
    sentences = _segments(plain, _SENTENCE_SEPS + r"|,(?=\s*(?:so|and so|which|but|while)\b)")
    clauses = _segments(plain, _CLAUSE_SEPS)
    quantities = _quantities(plain, sentences, clauses)
    taken = [(q.start, q.end) for q in quantities]
    claims = quantities + _sequences(quantities, plain, sentences) + _counts(plain, taken) + _directions(plain)
    parts = _segments(plain, _SENTENCE_SEPS + r"|,")
    kept = []
    for c in claims:
        clause = plain[slice(*_span_of(clauses, c.start))]
        if _HYPOTHETICAL.search(plain[slice(*_span_of(parts, c.start))]):
            continue
        if c.kind in ("quantity", "sequence", "count") and _REFERENCE.search(clause):
            continue
        kept.append(c)
    return tuple(sorted(kept + _quote_claims(text), key=lambda c: (c.start, c.kind)))


# ---------------------------------------------------------------------------------------------- facts

# meta keys that describe how an item was made, not the sound (or that a chain never cites)
NON_FACT_KEYS = frozenset({"split", "background", "corruption", "peak", "substitute_answer", "espeak_pitch",
                           "espeak_speed_wpm", "voice", "operands", "operators", "expression"})
_SUFFIX_DIMS = (("_hz", "hz"), ("_s", "s"), ("_db", "db"), ("_bpm", "bpm"), ("_percent", "percent"),
                ("words_per_minute", "wpm"), ("_wpm", "wpm"))


def fact_dim(key: str) -> str | None:
    """The dimension a fact key's suffix gives it ("f0_hz" -> "hz", "count"/"n_words" -> "count")."""
    if key == "count" or key.startswith("n_"):
        return "count"
    for suffix, dim in _SUFFIX_DIMS:
        if key.endswith(suffix):
            return dim
    return None


def facts_from_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facts a chain may cite, from an item's `meta` (DESIGN.md §3 key suffixes: `_hz`, `_s`, `_db`,
    `_bpm`), plus derived ones: a period `*_period_s` = 60 / `*_bpm`, and `*_percent` = 100 x `*_fraction`.

    Returns:
        {key: value}; values are numbers, strings or (nested) lists of numbers; empty for no meta.
    """
    facts = {k: v for k, v in dict(meta or {}).items() if k not in NON_FACT_KEYS and v is not None}
    for key, value in list(facts.items()):
        if key.endswith("_bpm"):
            facts[key[:-4] + "_period_s"] = _map(value, lambda b: 60.0 / b if b else math.inf)
        if key.endswith("fraction"):
            facts[key + "_percent"] = _map(value, lambda f: 100.0 * f)
    return facts


def _map(value, fn):
    if isinstance(value, (list, tuple)):
        return [_map(v, fn) for v in value]
    return fn(float(value)) if _is_number(value) else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat(value) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [float(value)] if _is_number(value) else []


# ---------------------------------------------------------------------------------------------- verifying

# dimension -> (relative, absolute) tolerance: a claim holds when it is this close to a fact, or within half
# a unit of its own last printed digit. Hz: half a semitone is 3 %; times: 20 ms or 5 %; levels 1.5 dB.
# Rates ("per second", dimension hz) get their own: 5 % or 0.1 per second.
TOLERANCES = {"hz": (0.03, 1.0), "s": (0.05, 0.02), "db": (0.0, 1.5), "bpm": (0.05, 2.0), "wpm": (0.1, 5.0),
              "percent": (0.0, 3.0), "count": (0.0, 0.0), "rate": (0.05, 0.1)}
MEASURED_EXTRA = {"s": 0.02, "db": 1.0, "percent": 2.0}  # added absolute slack for facts measured from audio
TREND_MIN_DB = 2.0  # a measured level change smaller than this neither supports nor refutes a trend
# Under this signal-to-noise ratio (clip_facts' `snr`), measured levels and times can only confirm: the
# sound's fades sink into the noise (the suite's ood clips at 0-5 dB SNR: durations and ramps read short).
MEASURED_MIN_SNR_DB = 15.0


@dataclass(frozen=True)
class Check:
    """A claim's verdict: "supported", "contradicted" or "unverifiable" (no fact of its kind), with why."""

    claim: Claim
    status: str
    detail: str

    def describe(self) -> str:
        return f"{self.claim.text!r}: {self.detail}"


def _close(claimed: float, fact: float, claim: Claim, measured: bool, scale: float = 1.0) -> bool:
    rel, abs_tol = TOLERANCES["rate" if claim.role == "rate" else claim.dim]
    tol = scale * max(rel * abs(fact), abs_tol, 0.5 * 10.0 ** -claim.decimals if claim.dim != "count" else 0.0)
    if measured:
        tol += MEASURED_EXTRA.get(claim.dim, 0.0) + rel * abs(fact)
    return abs(claimed - fact) <= tol + 1e-9


# a number's role -> (its dimension, words in the names of the facts of that role)
_ROLE_KEYS = {"duration": ("s", ("duration",)), "time": ("s", ("onset", "centre", "center", "start", "offset", "end")),
              "period": ("s", ("period",)), "clip": ("s", ("clip",)), "rate": ("hz", ("rate",))}
_STRICT_ROLES = ("period", "clip", "rate")  # only a fact of this role can confirm or refute such a number
UNORDERED_KEYS = frozenset({"peaks_hz"})  # list facts whose order means nothing (no ordinal binds into them)


def _per_sound_levels(facts: Mapping[str, Any], key: str) -> int:
    """How many sounds a level fact lists (0 for a scalar, such as a change of level)."""
    value = facts[key]
    return len(value) if fact_dim(key) == "db" and isinstance(value, (list, tuple)) else 0


def _candidates(claim: Claim, facts: Mapping[str, Any], measured: bool) -> tuple[list[float], list[str]]:
    """The fact values a number claim may refer to, and the keys they came from. Measured events may be
    split or joined differently from how a chain counts them, so no ordinal binds into measured lists; an
    unbound level is not checked against the levels of several sounds (module docstring)."""
    keys = [k for k, v in facts.items() if fact_dim(k) == claim.dim and _flat(v)]
    dim, words = _ROLE_KEYS.get(claim.role, (None, ()))
    if dim == claim.dim:  # prefer facts of the claim's role when there are any
        by_role = [k for k in keys if any(word in k for word in words)]
        keys = by_role or ([] if claim.role in _STRICT_ROLES else keys)
    values: list[float] = []
    if claim.index is not None and not measured:  # an ordinal picks that element of each list fact
        lists = [k for k in keys if isinstance(facts[k], (list, tuple)) and k not in UNORDERED_KEYS]
        for k in lists:
            seq = facts[k]
            if -len(seq) <= claim.index < len(seq):
                values += _flat(seq[claim.index])
        if values:
            return values, lists
    if claim.dim == "db":
        keys = [k for k in keys if _per_sound_levels(facts, k) <= 1]
    for k in keys:
        values += _flat(facts[k])
    if claim.dim == "db":  # "falls by 10 dB" cites the size of a signed change
        values += [abs(v) for v in values]
    return values, keys


def _check_number(claim: Claim, facts: Mapping[str, Any], measured: bool, scale: float = 1.0) -> Check:
    values, keys = _candidates(claim, facts, measured)
    if not values:
        several = [k for k in facts if _per_sound_levels(facts, k) > 1 and _flat(facts[k])]
        if claim.dim == "db" and several:
            n = _per_sound_levels(facts, several[0])
            return Check(claim, "unverifiable", f"a level not tied to one sound: which of the {n} sounds "
                                                f"({several[0]}) is meant is not said")
        return Check(claim, "unverifiable", f"no {claim.dim} fact to check against")
    near = ", ".join(f"{v:.4g}" for v in sorted(set(values))[:8])
    if claim.kind == "bound":
        ok = any(v > claim.value if claim.relation == ">" else v < claim.value for v in values)
        side = "above" if claim.relation == ">" else "below"
        return Check(claim, "supported" if ok else "contradicted",
                     f"{'a' if ok else 'no'} {claim.dim} fact {side} {claim.value:g} ({'/'.join(keys)}: {near})")
    if any(_close(claim.value, v, claim, measured, scale) for v in values):
        return Check(claim, "supported", f"matches {'/'.join(keys)}")
    if measured and claim.dim in ("s", "db") and facts.get("snr", math.inf) < MEASURED_MIN_SNR_DB:
        return Check(claim, "unverifiable",
                     f"too noisy to measure (SNR {facts['snr']:.0f} dB); {'/'.join(keys)}: {near}")
    return Check(claim, "contradicted",
                 f"{claim.value:g} {claim.dim} matches no fact ({'/'.join(keys)}: {near})")


def _check_sequence(claim: Claim, facts: Mapping[str, Any], measured: bool, scale: float = 1.0) -> Check | None:
    """A listed run against the list facts of its length (from their second element, for a run after "the
    others": one longer): supported when one matches in order; otherwise contradicted (from meta; measured
    events may be split or joined, so there it falls back to the members). None when no list of that length
    exists (the members are then checked one by one)."""
    skip = claim.index or 0
    lists = []
    for key, value in facts.items():
        if fact_dim(key) != claim.dim or not isinstance(value, (list, tuple)) or key in UNORDERED_KEYS:
            continue
        lists += [(key, _flat(v)) for v in value if isinstance(v, (list, tuple))] + [(key, _flat(value))]
    lists = [(k, v[skip:]) for k, v in lists if len(v) == skip + len(claim.value)]
    single = [Claim("quantity", "", 0, 0, claim.dim, x, decimals=claim.decimals) for x in claim.value]
    for key, seq in lists:
        if all(_close(c.value, v, c, measured, scale) for c, v in zip(single, seq)):
            return Check(claim, "supported", f"matches {key}{f'[{skip}:]' if skip else ''} in order")
    if not lists or measured:
        return None
    shown = "; ".join(f"{k}: {', '.join(f'{v:.4g}' for v in seq)}" for k, seq in lists[:2])
    return Check(claim, "contradicted", f"the listed values match no list of {len(claim.value)} ({shown})")


def _first_two(facts: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, list[float]] | None:
    for key in keys:
        value = facts.get(key)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
            return key, [float(v) for v in value]
    return None


_COMPARE_KEYS = {"pitch": ("f0_hz", "notes_hz", "freqs_hz", "pitch_hz"), "duration": ("durations_s",),
                 "tempo": ("tempo_bpm", "rates_hz"), "loudness": ("levels_db",)}


def _check_compare(claim: Claim, facts: Mapping[str, Any]) -> Check:
    found = _first_two(facts, _COMPARE_KEYS[claim.role])
    if found is None:
        return Check(claim, "unverifiable", f"no two-element {claim.role} fact")
    key, (a, b) = found
    winner = 0 if a > b else 1
    ok = winner == claim.index
    return Check(claim, "supported" if ok else "contradicted", f"{key} = [{a:.4g}, {b:.4g}]")


def _check_trend(claim: Claim, facts: Mapping[str, Any], measured: bool) -> Check:
    change = facts.get("change_db")
    if _is_number(change):
        sign = 1 if claim.value == "louder" else -1
        if measured and (abs(change) < TREND_MIN_DB or facts.get("snr", math.inf) < MEASURED_MIN_SNR_DB):
            return Check(claim, "unverifiable", f"measured level change {change:+.1f} dB: too small or too noisy")
        ok = sign * change > 0
        return Check(claim, "supported" if ok else "contradicted", f"change_db = {change:+.4g}")
    if isinstance(facts.get("trend"), str):
        ok = facts["trend"] == claim.value
        return Check(claim, "supported" if ok else "contradicted", f"trend = {facts['trend']}")
    return Check(claim, "unverifiable", "no loudness change fact")


def _check_contour(claim: Claim, facts: Mapping[str, Any]) -> Check:
    notes = facts.get("notes_hz")
    if isinstance(notes, (list, tuple)) and len(notes) >= 2 and all(_is_number(n) for n in notes):
        up = claim.value == "up"
        steps = [b - a for a, b in zip(notes, notes[1:])]
        if claim.role == "monotone":
            ok = all(s > 0 for s in steps) if up else all(s < 0 for s in steps)
        else:
            ok = (notes[-1] > notes[0]) == up
        return Check(claim, "supported" if ok else "contradicted", f"notes_hz {notes[0]:.4g} ... {notes[-1]:.4g}")
    if isinstance(facts.get("direction"), str):
        ok = (facts["direction"] in ("ascending", "up")) == (claim.value == "up")
        return Check(claim, "supported" if ok else "contradicted", f"direction = {facts['direction']}")
    return Check(claim, "unverifiable", "no melody fact")


_NOUN_KEYS = {"note": ("notes_hz",), "word": ("n_words",), "tone": ("f0_hz", "count", "onsets_s"),
              "chord": (), "syllable": ()}


def _check_count(claim: Claim, facts: Mapping[str, Any]) -> Check:
    if claim.role and claim.role.endswith("_than_first"):
        levels = facts.get("levels_db")
        if not (isinstance(levels, (list, tuple)) and len(levels) >= 2):
            return Check(claim, "unverifiable", "no per-beep levels")
        louder = claim.role.startswith("louder")
        actual = sum((v > levels[0]) if louder else (v < levels[0]) for v in levels[1:])
        return Check(claim, "supported" if actual == claim.value else "contradicted",
                     f"{actual} beeps are {claim.role.split('_')[0]} than the first (levels_db)")
    for key in _NOUN_KEYS.get(claim.role, ("count", "onsets_s")):
        value = facts.get(key)
        if key in ("count",) or key.startswith("n_"):
            actual = value if _is_number(value) else None
        else:  # a list of per-sound facts: its length (a nested list counts its groups)
            actual = len(value) if isinstance(value, (list, tuple)) and value and not any(
                isinstance(v, (list, tuple)) for v in value) else None
        if actual is not None:
            ok = float(actual) == claim.value
            return Check(claim, "supported" if ok else "contradicted", f"{key} gives {actual:g}")
    return Check(claim, "unverifiable", f"no count of {claim.role}s")


def _check_category(claim: Claim, facts: Mapping[str, Any]) -> Check:
    actual = facts.get(claim.role)
    if not isinstance(actual, str):
        return Check(claim, "unverifiable", f"no {claim.role} fact")
    ok = actual.lower() == claim.value
    return Check(claim, "supported" if ok else "contradicted", f"{claim.role} = {actual}")


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _check_quote(claim: Claim, facts: Mapping[str, Any]) -> Check:
    transcript = facts.get("transcript")
    if not isinstance(transcript, str):
        return Check(claim, "unverifiable", "no transcript")
    ok = _words(claim.value) in _words(transcript)
    return Check(claim, "supported" if ok else "contradicted", "in the transcript" if ok else "not what is said")


def verify_claims(claims: Iterable[Claim], facts: Mapping[str, Any], measured: bool = False,
                  tolerance: float = 1.0) -> list[Check]:
    """Check each claim against the facts.

    Args:
        claims: from `extract_claims`.
        facts: `facts_from_meta(meta)` or `mgrd.grounding.measure.clip_facts(wave)`.
        measured: the facts were measured from audio: tolerances widen by `MEASURED_EXTRA` and a tiny level
            change supports no trend.
        tolerance: multiplies each number's tolerance (`TOLERANCES`; counts stay exact): a coarser notion of
            "contradicts the audio" for a model that hears coarsely (the MGRD filter's `claim_tolerance`).
    Returns:
        One `Check` per claim, in order (an unchecked sequence leaves none). A sequence that matches a
        list in order also marks its members supported; one that matches no list of its length (from meta)
        is contradicted.
    """
    claims = list(claims)
    checks: dict[int, Check] = {}
    for i, c in enumerate(claims):
        if c.kind == "sequence":
            seq = _check_sequence(c, facts, measured, tolerance)
            if seq is None:
                continue  # its members are checked one by one
            checks[i] = seq
            if seq.status == "supported":
                for j, m in enumerate(claims):
                    if m.kind == "quantity" and c.start <= m.start and m.end <= c.end:
                        checks[j] = Check(m, "supported", f"in a sequence that {seq.detail}")
    out = []
    for i, c in enumerate(claims):
        if i in checks:
            out.append(checks[i])
        elif c.kind in ("quantity", "bound"):
            out.append(_check_number(c, facts, measured, tolerance))
        elif c.kind == "count":
            out.append(_check_count(c, facts))
        elif c.kind == "compare":
            out.append(_check_compare(c, facts))
        elif c.kind == "trend":
            out.append(_check_trend(c, facts, measured))
        elif c.kind == "contour":
            out.append(_check_contour(c, facts))
        elif c.kind == "category":
            out.append(_check_category(c, facts))
        elif c.kind == "quote":
            out.append(_check_quote(c, facts))
        # an unmatched sequence leaves no check of its own
    return out
