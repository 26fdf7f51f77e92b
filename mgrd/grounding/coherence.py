"""Logical coherence of a reasoning chain: the MGRD filter's second criterion (Step-Audio-R1 §4.2).

A chain is coherent when all of these hold (checked in this order; the first failure is the reason):
1. it has an answer (not cut off before `</think>`) and non-empty reasoning;
2. it is not degenerate: no token repeated `max_token_run` times in a row, no sentence said
   `max_sentence_repeats` times or more, no character run of `max_char_run`, and at most `max_ngram_repeat`
   of its word trigrams repeats of earlier ones (a decoding loop);
3. its length is within bounds (`CoherenceConfig.min_words` .. `max_words`);
4. no step contradicts another: two claims about the same thing that disagree ("the first is higher" and
   "the second is higher"; "gets louder" and "gets softer"; "3 beeps" and "4 beeps"; the first tone near
   300 Hz and near 500 Hz), or stated numbers that contradict a stated comparison, using
   `mgrd.grounding.claims` (no audio needed; `_numbers_vs_comparisons`, `_levels_vs_counts`):
   - first vs second: the numbers stated for the first and the second sound decide a "first/second is
     higher/longer/faster/louder" claim ("the first near 300 Hz, the second near 500 Hz, so the first is
     higher"; "beep 2 is at -3 dB and the first at 0 dB, so beep 2 is louder"). Pitch from Hz, loudness
     from dB, duration from times said to be lengths ("lasts 0.3 s"; a bare "the second about 0.5 s" after
     one counts too), tempo from BPM or from periods ("every 0.33 s": the shorter period is faster). Only
     when each of the two has exactly one such number, and the two differ;
   - louder than the first: a level stated for the first sound and levels for the others ("taking the
     first as 0 dB, the others sit at +7 dB, -6 dB and +9 dB") decide "N of them are louder/softer than
     the first": a run after "the others" gives all of them (N must match), single ordinals ("the third at
     +6 dB") some of them (N cannot be fewer than those stated louder);
5. the conclusion the reasoning states (after its last "the answer is", "so", "therefore", "thus" or
   "hence") names the same answer as the final answer, read by the task's grader ("choice": the same
   option; "numeric": the same number; "exact": the same normalised text). For a numeric answer, a count
   "N of them are louder/softer than the first" concluded just before "the answer is" must be that number
   too ("so two beeps are louder than the first. The answer is 3" fails).

The rules are deterministic and need no model; `mgrd.loop.filters` can back them with an LLM judge.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from mgrd.grounding.claims import TOLERANCES, Claim, blank_quotes, extract_claims
from mgrd.tasks.grading import normalize, parse_final_number, resolve_choice


@dataclass(frozen=True)
class CoherenceConfig:
    """Bounds of the coherence check (module docstring)."""

    min_words: int = field(default=8, metadata={"help": "fewest words of reasoning (suite chains have 20-70)"})
    max_words: int = field(default=1500, metadata={"help": "most words of reasoning"})
    max_token_run: int = field(default=6, metadata={"help": "a token repeated this often in a row is a loop"})
    max_sentence_repeats: int = field(default=3, metadata={"help": "a sentence said this often is a loop"})
    max_char_run: int = field(default=24, metadata={"help": "a character repeated this often in a row is a loop"})
    max_ngram_repeat: float = field(default=0.5, metadata={
        "help": "largest share of word trigrams that repeat earlier ones"})


@dataclass(frozen=True)
class Coherence:
    """The verdict: `passed`, and the reason (what failed, or a one-line summary when it passed)."""

    passed: bool
    reason: str


_WORD = re.compile(r"[\w'.+-]+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|[!?;\n]")
_CONCLUSION = re.compile(r"\b(?:answer\s*(?:is|would be|:|=)|so|therefore|thus|hence|which means)\b", re.IGNORECASE)


def degenerate(text: str, cfg: CoherenceConfig = CoherenceConfig()) -> str | None:
    """Why `text` looks like a decoding loop, or None when it does not."""
    runs = re.search(r"(.)\1{%d,}" % (cfg.max_char_run - 1), text)
    if runs:
        return f"degenerate: {runs.group(1)!r} repeated {len(runs.group(0))} times"
    tokens = [t.lower() for t in _WORD.findall(text)]
    run = 1
    for a, b in zip(tokens, tokens[1:]):
        run = run + 1 if a == b else 1
        if run >= cfg.max_token_run:
            return f"degenerate: {a!r} repeated {run} times in a row"
    sentences = [" ".join(s.lower().split()) for s in re.split(r"(?<!\d)[.!?\n]+(?!\d)", text)]
    counts: dict[str, int] = defaultdict(int)
    for s in sentences:
        if len(s.split()) >= 3:
            counts[s] += 1
            if counts[s] >= cfg.max_sentence_repeats:
                return f"degenerate: the sentence {s[:60]!r} is said {counts[s]} times"
    words = [t for t in tokens if t.isalnum() or any(c.isalnum() for c in t)]
    grams = list(zip(words, words[1:], words[2:]))
    if len(grams) >= 12:
        repeated = 1 - len(set(grams)) / len(grams)
        if repeated > cfg.max_ngram_repeat:
            return f"degenerate: {repeated:.0%} of its word trigrams repeat earlier ones"
    return None


def contradictions(text: str) -> list[str]:
    """Pairs of steps in `text` that cannot both be true, each as one line (empty when there are none)."""
    claims = extract_claims(text)
    found = []
    groups: dict[tuple, list[Claim]] = defaultdict(list)
    for c in claims:
        if c.kind in ("compare", "trend", "contour", "category", "count"):
            groups[(c.kind, c.role)].append(c)
        elif c.kind == "quantity" and c.index is not None:
            groups[(c.kind, c.dim, c.index, c.role)].append(c)
    for key, group in groups.items():
        first = group[0]
        for other in group[1:]:
            if _disagree(first, other):
                found.append(f"{first.text!r} vs {other.text!r}")
                break
    found += _numbers_vs_comparisons(claims, text)
    found += _levels_vs_counts(claims)
    return found


def _disagree(a: Claim, b: Claim) -> bool:
    if a.kind == "compare":
        return a.index != b.index
    if a.kind == "quantity":
        rel, abs_tol = TOLERANCES[a.dim]
        tol = max(rel * max(abs(a.value), abs(b.value)), abs_tol, 0.5 * 10.0 ** -min(a.decimals, b.decimals))
        return abs(a.value - b.value) > tol
    return a.value != b.value


# compare feature -> the (dimension, role, sign) of numbers that decide it: sign +1 when the larger number
# is the higher/longer/faster/louder sound, -1 when the smaller is (a shorter period is a faster rhythm)
_DECIDING = {"pitch": [("hz", None, 1)], "duration": [("s", "duration", 1)], "tempo": [("bpm", None, 1),
                                                                                         ("s", "period", -1)],
             "loudness": [("db", None, 1)]}


def _first_and_second(claims: list[Claim], text: str, dim: str, role: str | None) -> tuple[Claim, Claim] | None:
    """The one number of `dim` and `role` stated for each of the first two sounds, or None. For a time
    role, a bare number bound to a sound ("and the second about 0.42 s") takes the role of the number
    before it in its sentence when that one has it ("the first lasts about 0.22 s")."""
    picked: dict[int, set] = defaultdict(set)
    shown: dict[int, Claim] = {}
    prev = None
    for q in claims:
        if q.kind != "quantity" or q.dim != dim:
            continue
        q_role = q.role
        if (role and dim == "s" and q_role is None and prev is not None and prev.role == role
                and not _SENTENCE_END.search(text[prev.end:q.start])):
            q_role = role  # elliptic: "lasts about 0.22 s and the second about 0.42 s"
        prev = q
        if q_role == role and q.index in (0, 1):
            picked[q.index].add(q.value)
            shown[q.index] = q
    if all(len(picked[i]) == 1 for i in (0, 1)):
        return shown[0], shown[1]
    return None


def _numbers_vs_comparisons(claims: list[Claim], text: str) -> list[str]:
    """Comparisons of the first two sounds that the numbers stated for them contradict (module docstring)."""
    found = []
    for c in claims:
        if c.kind != "compare" or c.role not in _DECIDING:
            continue
        for dim, role, sign in _DECIDING[c.role]:
            pair = _first_and_second(claims, text, dim, role)
            if pair is None or math.isclose(pair[0].value, pair[1].value):
                continue
            larger = 0 if sign * pair[0].value > sign * pair[1].value else 1
            if larger != c.index:
                found.append(f"{c.text!r} vs {pair[0].text!r} and {pair[1].text!r}")
                break
    return found


def _levels_vs_counts(claims: list[Claim]) -> list[str]:
    """Counts of beeps louder (softer) than the first that the stated levels contradict (module docstring)."""
    counts = [c for c in claims if c.kind == "count" and (c.role or "").endswith("_than_first")]
    firsts = {q.value for q in claims if q.kind == "quantity" and q.dim == "db" and q.index == 0}
    if not counts or len(firsts) != 1:
        return []
    first = firsts.pop()
    runs = [c for c in claims if c.kind == "sequence" and c.dim == "db" and c.index == 1]
    if runs:  # "the others sit at ...": every level after the first
        others, exact = list(runs[-1].value), True
    else:  # single ordinals ("the third at +6 dB"): some of them
        bound = {q.index: q.value for q in claims if q.kind == "quantity" and q.dim == "db"
                 and q.index is not None and q.index >= 1}
        others, exact = list(bound.values()), False
    if not others:
        return []
    found = []
    for c in counts:
        louder = c.role.startswith("louder")
        stated = sum((v > first) if louder else (v < first) for v in others)
        if stated == c.value or (not exact and c.value > stated):
            continue
        side = "above" if louder else "below"
        found.append(f"{c.text!r} vs the stated levels ({'' if exact else 'at least '}{stated} of {len(others)} "
                     f"{side} the first's {first:g} dB)")
    return found


def concluded_count(reasoning: str) -> Claim | None:
    """A count of beeps louder (softer) than the first that the reasoning concludes just before its "the
    answer is" ("..., so 2 of them are louder than the first. The answer is 2"), or None."""
    plain = blank_quotes(reasoning)
    marks = list(_CONCLUSION.finditer(plain))
    if len(marks) < 2 or not marks[-1].group(0).lower().startswith("answer"):
        return None
    start, end = marks[-2].end(), marks[-1].start()
    counts = [c for c in extract_claims(reasoning) if c.kind == "count" and start <= c.start < end
              and (c.role or "").endswith("_than_first")]
    return counts[0] if counts else None


def stated_conclusion(reasoning: str) -> str | None:
    """The text after the reasoning's last conclusion marker ("the answer is", "so", ...), or None."""
    plain = blank_quotes(reasoning)
    marks = list(_CONCLUSION.finditer(plain))
    if not marks:
        return None
    return reasoning[marks[-1].end():].strip(" \t\n:.,") or None


def same_answer(conclusion: str, answer: str, grader: str, choices: list[str] | None) -> bool:
    """Whether a stated conclusion and a final answer name the same answer under `grader`."""
    if grader == "choice" and choices:
        named = resolve_choice(answer, choices)
        return named is not None and resolve_choice(conclusion, choices) == named
    if grader == "numeric":
        a, c = parse_final_number(answer), parse_final_number(conclusion)
        return a is not None and c is not None and math.isclose(a, c, rel_tol=1e-6, abs_tol=1e-6)
    return bool(normalize(answer)) and normalize(conclusion).endswith(normalize(answer))


def check_coherence(reasoning: str, answer: str | None, grader: str, choices: list[str] | None = None,
                    cfg: CoherenceConfig = CoherenceConfig()) -> Coherence:
    """The coherence verdict of one completion (module docstring).

    Args:
        reasoning: the text before `</think>`.
        answer: the text after it; None when the completion was cut off.
        grader: the task's grader ("choice", "numeric" or "exact").
        choices: the item's options (choice items).
        cfg: the bounds.
    Returns:
        `Coherence(passed, reason)`.
    """
    if answer is None:
        return Coherence(False, "no answer: cut off before </think>")
    if not reasoning.strip():
        return Coherence(False, "empty reasoning")
    loop = degenerate(reasoning, cfg)
    if loop:
        return Coherence(False, loop)
    n_words = len(reasoning.split())
    if not cfg.min_words <= n_words <= cfg.max_words:
        return Coherence(False, f"reasoning has {n_words} words, outside [{cfg.min_words}, {cfg.max_words}]")
    clashes = contradictions(reasoning)
    if clashes:
        return Coherence(False, f"steps contradict each other: {clashes[0]}")
    conclusion = stated_conclusion(reasoning)
    if conclusion is None:
        return Coherence(False, "the reasoning states no conclusion")
    if not same_answer(conclusion, answer, grader, choices):
        return Coherence(False, f"the reasoning concludes {conclusion[:60]!r} but the answer is "
                                f"{answer.strip()[:60]!r}")
    counted = concluded_count(reasoning) if grader == "numeric" else None
    if counted is not None and parse_final_number(answer) != counted.value:
        return Coherence(False, f"the reasoning concludes {counted.text[:60]!r} but the answer is "
                                f"{answer.strip()[:60]!r}")
    return Coherence(True, f"{n_words} words; concludes {conclusion[:40]!r} = the answer")
